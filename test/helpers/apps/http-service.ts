// Fixture app: an HTTP service instrumented by apm.instrumentHttp() and nothing else.
// Every request answers JSON with the correlation headers it received; with
// ?next=URL it first calls URL (through node:http, or fetch with ?via=fetch) and
// includes that answer as `downstream`; ?status=N answers with status N.
// Prints {"ready":true,"port":N} once listening, and {"state":S} on every shim state change.
import { subscribe } from 'node:diagnostics_channel';
import { type IncomingMessage, type ServerResponse, createServer, request } from 'node:http';
import { connect } from '@apm-sidecar/shim';

subscribe('apm-sidecar:shim:state', (m) => process.stdout.write(`${JSON.stringify({ state: (m as { to: string }).to })}\n`));
const apm = connect({ app: process.env.APP ?? 'http-service', flushMs: 50, reconnectMinMs: 20, reconnectMaxMs: 200, instrumentHttp: true });

function viaHttp(url: string): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const req = request(url, (res) => {
      let body = '';
      res.on('data', (d) => {
        body += d;
      });
      res.on('end', () => resolve(JSON.parse(body)));
    });
    req.on('error', reject);
    req.end();
  });
}

async function viaFetch(url: string): Promise<unknown> {
  const r = await fetch(url);
  return r.json();
}

async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const u = new URL(req.url ?? '/', 'http://x');
  const next = u.searchParams.get('next');
  const downstream = next === null ? null : u.searchParams.get('via') === 'fetch' ? await viaFetch(next) : await viaHttp(next);
  res.statusCode = Number(u.searchParams.get('status') ?? 200);
  res.setHeader('content-type', 'application/json');
  res.end(
    JSON.stringify({
      app: apm.app,
      received: { correlation: req.headers['apm-correlation'] ?? null, traceparent: req.headers.traceparent ?? null },
      downstream,
    }),
  );
}

const server = createServer((req, res) => {
  handle(req, res).catch((err: unknown) => {
    res.statusCode = 502;
    res.end(JSON.stringify({ error: String(err) }));
  });
});
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ ready: true, port: (server.address() as { port: number }).port })}\n`);
});

process.on('SIGTERM', () => {
  server.close();
  server.closeAllConnections();
  void apm.close().then(() => process.exit(0));
});
