// Fixture app: records, then awaits flush() or close() as its last act and
// prints a line after the await; the line proves the promise settled before
// the process exited.
//   SOCKET   socket path;  MODE  'flush' | 'close';  TIMEOUT_MS  flush timeout (default 5000)
//   WAIT_ACTIVE '1': wait (at most 10 s) for the welcome first;  RUN  tag value of the counter
import { connect } from '@apm-sidecar/shim';

const apm = connect({ app: 'await', socket: process.env.SOCKET ?? '' });
const mode = process.env.MODE ?? 'flush';

async function main(): Promise<void> {
  apm.counter('await.count', { run: process.env.RUN ?? '0' }).add(1);
  // One name per run: the sidecar de-duplicates registrations by name across apps.
  apm.registerBusinessTransaction(`GET /await/${process.env.RUN ?? 'default'}`);
  if (mode === 'close') {
    await apm.close();
    process.stdout.write(`${JSON.stringify({ closed: true, stats: apm.stats() })}\n`);
  } else {
    const ok = await apm.flush(Number(process.env.TIMEOUT_MS ?? 5000));
    process.stdout.write(`${JSON.stringify({ flushed: ok, stats: apm.stats() })}\n`);
  }
}

if (process.env.WAIT_ACTIVE === '1') {
  const started = Date.now();
  const poll = setInterval(() => {
    if (apm.state === 'active' || Date.now() - started > 10_000) {
      clearInterval(poll);
      void main();
    }
  }, 5);
} else {
  void main();
}
