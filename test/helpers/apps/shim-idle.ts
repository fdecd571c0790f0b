// Fixture app: connects, records one of everything, prints one JSON line, then
// does nothing at all. It must exit by itself (code 0) whatever the sidecar does.
//   SOCKET        socket path (unset: APM_SIDECAR_SOCKET / the default path)
//   WAIT_ACTIVE   '1': wait (at most 10 s) until the sidecar welcomed us before recording
//   EVENTS        how many 2 KB events to record (default 1): many fill a hung sidecar's socket
//   EXIT_AFTER_AWAIT '1': process.exit(0) right after recording, once a resolved promise settles
//   HTTP          '1': with HTTP instrumentation, and one request served and one made (http and fetch) first
import { createServer, get } from 'node:http';
import { connect } from '@apm-sidecar/shim';

const socket = process.env.SOCKET;
const instrumentHttp = process.env.HTTP === '1';
const apm = connect(socket === undefined ? { app: 'idle', instrumentHttp } : { app: 'idle', socket, instrumentHttp });

/** Serve one request made through node:http and one through fetch, then close the server. */
function httpRoundTrip(then: () => void): void {
  const server = createServer((_req, res) => res.end('ok'));
  server.listen(0, '127.0.0.1', () => {
    const url = `http://127.0.0.1:${(server.address() as { port: number }).port}/idle/1`;
    get(url, (res) => {
      res.resume();
      res.on('end', () => {
        void fetch(url)
          .then((r) => r.text())
          .finally(() => {
            server.closeAllConnections();
            server.close();
            then();
          });
      });
    });
  });
}

function record(): void {
  apm.counter('idle.count', { k: 'v' }).add(1);
  apm.gauge('idle.gauge').set(3);
  apm.histogram('idle.hist').record(12.5);
  const tx = apm.startTransaction('GET /idle');
  tx.step('sql', 'SELECT 1', 1);
  apm.activeStack(tx, ['at idle (idle.js:1:1)']);
  tx.end();
  const events = Number(process.env.EVENTS ?? 1);
  for (let i = 0; i < events; i++) apm.event({ type: 'idle', message: `event ${i} ${'x'.repeat(2000)}`, attributes: { pid: process.pid } });
  apm.snapshot({ idle: true });
  apm.registerBusinessTransaction('GET /idle');
  process.stdout.write(`${JSON.stringify({ recorded: true, state: apm.state, stats: apm.stats() })}\n`);
  // The app ends the moment an await settles, before the event loop turns again.
  if (process.env.EXIT_AFTER_AWAIT === '1') void Promise.resolve().then(() => process.exit(0));
}

if (instrumentHttp) {
  httpRoundTrip(record);
} else if (process.env.WAIT_ACTIVE === '1') {
  const started = Date.now();
  const poll = setInterval(() => {
    if (apm.state === 'active' || Date.now() - started > 10_000) {
      clearInterval(poll);
      record();
    }
  }, 5);
} else {
  record();
}
