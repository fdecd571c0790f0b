import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import type { Logger } from './logger';
import { SidecarMetrics } from './metrics';
import type { Sidecar } from './sidecar';

/**
 * `--http HOST:PORT`: /healthz (the process is up), /readyz (the IPC socket is
 * listening, the sidecar is not shutting down, and the upstream is ready: see
 * Sidecar.readiness), /metrics (Prometheus text).
 */
export function startHttp(sidecar: Sidecar, host: string, port: number, log: Logger): Promise<Server> {
  const metrics = new SidecarMetrics(sidecar.stats);
  const server = createServer((req, res) => handle(sidecar, metrics, req, res));
  server.on('clientError', (_err, socket) => socket.destroy());
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      const a = server.address();
      log.info({ http: a }, 'serving /healthz, /readyz and /metrics');
      resolve(server);
    });
  });
}

function handle(sidecar: Sidecar, metrics: SidecarMetrics, req: IncomingMessage, res: ServerResponse): void {
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('method not allowed\n');
    return;
  }
  const path = (req.url ?? '/').split('?')[0];
  if (path === '/healthz') {
    res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
  } else if (path === '/readyz') {
    const r = sidecar.readiness();
    res.writeHead(r.ready ? 200 : 503, { 'content-type': 'application/json' }).end(`${JSON.stringify(r)}\n`);
  } else if (path === '/metrics') {
    metrics.text().then(
      (text) => res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(text),
      (err: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${err.message}\n`),
    );
  } else {
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
  }
}
