// Fixture app for the fault suite: adds 1 to each of its counters every TICK_MS and
// awaits flush() every FLUSH_EVERY ticks. It prints, synchronously (stdout is a pipe),
//   {"recorded":{name:total}}  after every tick: an upper bound of what can reach the collector
//   {"acked":{name:total}}     after every flush() that resolved true: what must reach it
// so a test that kills it at any moment still knows both bounds (test/helpers/ledger.ts).
//   SOCKET  socket path;  APP  app name;  SERIES  comma-separated counter names
//   TICK_MS (20)  FLUSH_EVERY (5)  FLUSH_TIMEOUT_MS (2000)  RUN_MS (0: until SIGTERM)
import { connect } from '@apm-sidecar/shim';

const names = (process.env.SERIES ?? 'load.n').split(',').filter((s) => s !== '');
const tickMs = Number(process.env.TICK_MS ?? 20);
const flushEvery = Number(process.env.FLUSH_EVERY ?? 5);
const flushTimeoutMs = Number(process.env.FLUSH_TIMEOUT_MS ?? 2000);
const runMs = Number(process.env.RUN_MS ?? 0);

const apm = connect({ app: process.env.APP ?? 'load', socket: process.env.SOCKET ?? '', flushMs: 50, reconnectMinMs: 20, reconnectMaxMs: 200 });
const counters = names.map((n) => apm.counter(n));
const recorded: Record<string, number> = Object.fromEntries(names.map((n) => [n, 0]));
let stopping = false;

const out = (o: unknown): void => {
  process.stdout.write(`${JSON.stringify(o)}\n`);
};

async function main(): Promise<void> {
  const started = Date.now();
  let tick = 0;
  while (!stopping && (runMs === 0 || Date.now() - started < runMs)) {
    names.forEach((n, i) => {
      recorded[n] = (recorded[n] as number) + 1;
      (counters[i] as { add(v: number): void }).add(1);
    });
    out({ recorded });
    tick++;
    if (tick % flushEvery === 0) {
      const upTo = { ...recorded };
      if (await apm.flush(flushTimeoutMs)) out({ acked: upTo });
    }
    await new Promise((r) => setTimeout(r, tickMs));
  }
  const upTo = { ...recorded };
  if (await apm.flush(flushTimeoutMs)) out({ acked: upTo });
  await apm.close();
  out({ done: true, stats: apm.stats() });
}

process.on('SIGTERM', () => {
  stopping = true;
});
void main();
