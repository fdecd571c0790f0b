// Fixture app: records metrics continuously and, on SIGUSR1, prints one JSON
// line with the per-call cost of record() since the last report (p50/p99 over
// batches), how many calls threw, and the worst event-loop lag seen.
import { connect } from '@apm-sidecar/shim';

const apm = connect({ app: 'recorder', flushMs: Number(process.env.FLUSH_MS ?? 50), reconnectMinMs: 20, reconnectMaxMs: 200 });
const h = apm.histogram('recorder.latency', { route: '/r' });
const c = apm.counter('recorder.calls');
const BATCH = 1000;
let perCall: number[] = [];
let calls = 0;
let threw = 0;
let maxLagMs = 0;
let last = Date.now();

const work = setInterval(() => {
  const now = Date.now();
  const lag = now - last - 5;
  if (lag > maxLagMs) maxLagMs = lag;
  last = now;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < BATCH; i++) {
    try {
      h.record((i % 100) + 1);
      c.add(1);
    } catch {
      threw++;
    }
  }
  perCall.push(Number(process.hrtime.bigint() - t0) / (2 * BATCH));
  calls += 2 * BATCH;
}, 5);

function pct(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? Number.NaN : (s[Math.floor(q * (s.length - 1))] as number);
}

process.on('SIGUSR1', () => {
  process.stdout.write(
    `${JSON.stringify({ report: true, calls, threw, p50ns: pct(perCall, 0.5), p99ns: pct(perCall, 0.99), maxLagMs, state: apm.state, stats: apm.stats() })}\n`,
  );
  perCall = [];
  calls = 0;
  maxLagMs = 0;
});

process.on('SIGTERM', () => {
  clearInterval(work);
  void apm.close().then(() => process.exit(0));
});

process.stdout.write(`${JSON.stringify({ ready: true, pid: process.pid })}\n`);
