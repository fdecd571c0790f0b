'use strict';
/**
 * One application process of the outage bench (spawned by outage.js): a real shim
 * (the package entry an app loads) recording SERIES series continuously and flushing
 * once per flush_ms, whatever the sidecar's state.
 *
 *   node outage-child.js <socket> <index> [series=100] [flushMs=1000]
 *
 * 60% of the series are histograms (http.server.duration by route), 40% counters
 * (http.server.requests by route), each tagged with the process index so that the
 * 4 processes' series stay distinct in the sidecar (400 series, not 100 merged). Every series records one value every 10 ms
 * (100 values per series per second), so each flushed point carries count ≈ 100
 * per second of flush and each histogram a realistic sketch (log-normal latencies,
 * median 20 ms). Prints one JSON line `{"ready":true}` once connected, and on
 * SIGUSR2 one line with the shim's stats. Exits on SIGTERM (after close()) or
 * when its parent goes away.
 */
const { resolve } = require('node:path');
const { latencies } = require('./lib/stats');

const { connect } = require(resolve(__dirname, '..', 'client-shim'));

const [socket, indexArg, seriesArg, flushArg] = process.argv.slice(2);
const index = Number(indexArg);
const SERIES = Number(seriesArg ?? 100);
const FLUSH_MS = Number(flushArg ?? 1000);
const ROUTES = ['/pay', '/cart', '/login', '/search', '/orders', '/items', '/profile', '/health', '/checkout', '/refund'];

const apm = connect({ app: `outage-bench-${index}`, socket, flushMs: FLUSH_MS, reconnectMinMs: 100, reconnectMaxMs: 1000 });
const hist = [];
const ctr = [];
for (let s = 0; s < SERIES; s++) {
  // A tag per process: the sidecar aggregates equal series across shims, so without it 4 × 100 would be 100.
  const tags = { proc: String(index), route: `${ROUTES[s % ROUTES.length]}/${Math.floor(s / 10)}`, status: '200' };
  if (s % 10 < 6) hist.push(apm.histogram('http.server.duration', tags));
  else ctr.push(apm.counter('http.server.requests', tags));
}
const values = latencies(4096, 17 + index);
let i = 0;
const work = setInterval(() => {
  for (const h of hist) h.record(values[i++ & 4095]);
  for (const c of ctr) c.add(1);
}, 10);

let announced = false;
const ready = setInterval(() => {
  if (!announced && apm.state === 'active') {
    announced = true;
    clearInterval(ready);
    process.stdout.write(`${JSON.stringify({ ready: true, pid: process.pid })}\n`);
  }
}, 20);

process.on('SIGUSR2', () => process.stdout.write(`${JSON.stringify({ stats: apm.stats() })}\n`));
const stop = () => {
  clearInterval(work);
  clearInterval(ready);
  apm.close().then(
    () => process.exit(0),
    () => process.exit(0),
  );
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
// The bench holds our stdin open: when it dies (even by SIGKILL), stdin ends and we leave.
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
