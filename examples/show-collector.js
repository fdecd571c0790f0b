'use strict';
// Prints what the collector stored, through its JSON API: agents, counters, and a
// few metric points with their quantiles. Usage: node examples/show-collector.js PORT
// A read token (from `apm-collector tokens create`) is taken from APM_COLLECTOR_TOKEN; without
// one the collector answers loopback clients only (protected mode).
const port = Number(process.argv[2]);
const base = `http://127.0.0.1:${port}`;
const token = process.env.APM_COLLECTOR_TOKEN;
const headers = token ? { authorization: `Bearer ${token}` } : {};

async function get(path) {
  const r = await fetch(base + path, { headers });
  if (!r.ok) throw new Error(`GET ${path} -> ${r.status}`);
  return r.json();
}

const fmt = (v) => (v === null || v === undefined ? '-' : Number.isInteger(v) ? String(v) : v.toFixed(2));

(async () => {
  const agents = await get('/api/agents');
  console.log('GET /api/agents');
  for (const a of agents) console.log(`  ${a.agentId}  app=${a.app} host=${a.host} state=${a.state} licensed=${a.licensed} lastSeenAt=${a.lastSeenAt}`);
  const stats = await get('/api/stats');
  console.log('GET /api/stats');
  console.log(`  received ${JSON.stringify(stats.received)}`);
  console.log(`  droppedLate ${stats.droppedLate}  rejected ${JSON.stringify(stats.rejected)}`);
  const points = await get('/api/metrics?name=http.server.duration');
  console.log(`GET /api/metrics?name=http.server.duration  (${points.length} points; the last 5)`);
  for (const p of points.slice(-5)) {
    const tags = Object.entries(p.tags)
      .map(([k, v]) => `${k}=${v}`)
      .join(',');
    console.log(
      `  ${new Date(p.ts).toISOString()} {${tags}} count ${p.count} min ${fmt(p.min)} p50 ${fmt(p.p50)} p95 ${fmt(p.p95)} p99 ${fmt(p.p99)} max ${fmt(p.max)} ms`,
    );
  }
})().catch((e) => {
  console.error(`show-collector: ${e.message}`);
  process.exit(1);
});
