'use strict';
/**
 * A small load generator for the example app. Loopback only, bounded in time
 * and in requests; prints a one-line summary on stderr and exits.
 *
 *   node examples/http-app/load.js --port 8080 [--duration 6] [--concurrency 4] [--max-requests 50000]
 *
 * Options (or environment): --port (PORT), --host (HOST, default 127.0.0.1; must be a
 * loopback address), --duration seconds (DURATION, default 6, at most 300),
 * --concurrency (CONCURRENCY, default 4, at most 64), --max-requests (MAX_REQUESTS,
 * default 50000, at most 1000000).
 *
 * The mix: /pay 40%, /orders 35%, /fail 10%, /slow 3%, and 12% /orders sent with
 * `apm-correlation: notxdetect=true` (the app must not detect those as transactions).
 * Exit code: 0 when at least one request got an answer, 1 when none did, 2 on bad options.
 */
const http = require('node:http');

function usage(msg) {
  process.stderr.write(
    `load: ${msg}\nusage: node examples/http-app/load.js --port PORT [--duration S] [--concurrency N] [--max-requests N] [--host 127.0.0.1]\n`,
  );
  process.exit(2);
}

function parseArgs(argv) {
  const opts = {
    host: process.env.HOST || '127.0.0.1',
    port: process.env.PORT,
    duration: process.env.DURATION ?? '6',
    concurrency: process.env.CONCURRENCY ?? '4',
    maxRequests: process.env.MAX_REQUESTS ?? '50000',
  };
  const names = { '--host': 'host', '--port': 'port', '--duration': 'duration', '--concurrency': 'concurrency', '--max-requests': 'maxRequests' };
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i].split('=', 2);
    const key = names[flag];
    if (key === undefined) usage(`unknown option ${JSON.stringify(argv[i])}`);
    const value = inline ?? argv[++i];
    if (value === undefined) usage(`${flag} needs a value`);
    opts[key] = value;
  }
  const num = (name, raw, min, max) => {
    const n = Number(raw);
    if (raw === undefined || raw === '' || !Number.isFinite(n) || n < min || n > max)
      usage(`${name} must be a number ${min}..${max}, got ${JSON.stringify(raw)}`);
    return n;
  };
  if (!['127.0.0.1', '::1', 'localhost'].includes(opts.host))
    usage(`--host must be a loopback address (127.0.0.1, ::1 or localhost), got ${JSON.stringify(opts.host)}`);
  return {
    host: opts.host,
    port: Math.floor(num('--port', opts.port, 1, 65535)),
    durationMs: num('--duration', opts.duration, 0.1, 300) * 1000,
    concurrency: Math.floor(num('--concurrency', opts.concurrency, 1, 64)),
    maxRequests: Math.floor(num('--max-requests', opts.maxRequests, 1, 1_000_000)),
  };
}

const MIX = [
  [0.4, '/pay', undefined],
  [0.35, '/orders', undefined],
  [0.1, '/fail', undefined],
  [0.03, '/slow', undefined],
  [0.12, '/orders', { 'apm-correlation': 'notxdetect=true' }],
];

function pick() {
  let r = Math.random();
  for (const m of MIX) {
    if (r < m[0]) return m;
    r -= m[0];
  }
  return MIX[0];
}

function request(agent, opts, path, headers) {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const req = http.get({ host: opts.host, port: opts.port, path, headers, agent, timeout: 10_000 }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode, ms: performance.now() - t0 }));
      res.on('error', () => resolve({ status: 0, ms: performance.now() - t0 }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve({ status: 0, ms: performance.now() - t0 }));
  });
}

function quantile(sorted, q) {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const agent = new http.Agent({ keepAlive: true, maxSockets: opts.concurrency });
  const start = performance.now();
  const deadline = start + opts.durationMs;
  const byStatus = {};
  const latencies = [];
  let issued = 0;
  let failed = 0;

  async function worker() {
    while (performance.now() < deadline && issued < opts.maxRequests) {
      issued++;
      const [, path, headers] = pick();
      const r = await request(agent, opts, path, headers);
      if (r.status === 0) {
        failed++;
        // The app is not answering: back off a little instead of spinning.
        await new Promise((res) => setTimeout(res, 50));
        continue;
      }
      byStatus[r.status] = (byStatus[r.status] ?? 0) + 1;
      latencies.push(r.ms);
    }
  }
  await Promise.all(Array.from({ length: opts.concurrency }, worker));
  agent.destroy();

  const secs = (performance.now() - start) / 1000;
  const answered = latencies.length;
  latencies.sort((a, b) => a - b);
  const statuses = Object.entries(byStatus)
    .map(([s, n]) => `${s}: ${n}`)
    .join(', ');
  process.stderr.write(
    `load: ${answered} requests in ${secs.toFixed(1)} s (${(answered / secs).toFixed(0)}/s, concurrency ${opts.concurrency}) · ` +
      `${statuses || 'no answers'} · connection errors: ${failed} · ` +
      `latency p50 ${quantile(latencies, 0.5).toFixed(1)} ms, p99 ${quantile(latencies, 0.99).toFixed(1)} ms, max ${(latencies[answered - 1] ?? 0).toFixed(1)} ms\n`,
  );
  process.exitCode = answered > 0 ? 0 : 1;
}

main().catch((err) => {
  process.stderr.write(`load: ${err.stack || err}\n`);
  process.exit(1);
});
