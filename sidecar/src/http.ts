import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import type { Socket } from 'node:net';
import { type HttpLimits, NODE_REQUEST_TIMEOUT, serverLimits } from '@apm-sidecar/proto';
import type { Logger } from './logger';
import { SidecarMetrics } from './metrics';
import type { Sidecar } from './sidecar';

export type { HttpLimits } from '@apm-sidecar/proto';

/** The stable code and status of a request node:http refused before it reached a handler. */
function clientErrorOf(err: NodeJS.ErrnoException): { code: string; status: string } {
  if (err.code === 'HPE_HEADER_OVERFLOW') return { code: 'ERR_HEADERS_TOO_LARGE', status: '431 Request Header Fields Too Large' };
  if (err.code === NODE_REQUEST_TIMEOUT) return { code: 'ERR_REQUEST_TIMEOUT', status: '408 Request Timeout' };
  return { code: 'ERR_BAD_REQUEST', status: '400 Bad Request' };
}

/**
 * `--http HOST:PORT`: /healthz (the process is up), /readyz (the IPC socket is
 * listening, the sidecar is not shutting down, and the upstream is ready: see
 * Sidecar.readiness), /metrics (Prometheus text).
 */
export function startHttp(sidecar: Sidecar, host: string, port: number, limits: HttpLimits, log: Logger): Promise<Server> {
  const metrics = new SidecarMetrics(sidecar.stats);
  const l = serverLimits(limits);
  // Sockets with an exchange under way (a request not read to its end, or its answer not finished):
  // a refusal there cannot be answered on the wire (it would follow or interleave another answer), only cut.
  const inFlight = new WeakSet<Socket>();
  const server = createServer(l, (req, res) => {
    trackExchange(inFlight, req, res);
    handle(sidecar, metrics, req, res);
  });
  server.keepAliveTimeout = l.keepAliveTimeout;
  // node:http may report one connection more than once (the rest of an oversized header still arriving): counted once.
  const refused = new WeakSet<Socket>();
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    if (refused.has(socket)) {
      socket.destroy();
      return;
    }
    refused.add(socket);
    const { code } = clientErrorOf(err);
    const counters = sidecar.stats.counters;
    counters.httpErrors[code] = (counters.httpErrors[code] ?? 0) + 1;
    if (inFlight.has(socket)) socket.destroy();
    else refuse(code, err, socket);
  });
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

/** An exchange is in flight from its request until the request was read to its end and its answer finished. */
function trackExchange(inFlight: WeakSet<Socket>, req: IncomingMessage, res: ServerResponse): void {
  const socket = req.socket;
  inFlight.add(socket);
  const settle = (): void => {
    if (req.complete && res.writableFinished) inFlight.delete(socket);
  };
  req.once('end', settle);
  res.once('finish', settle);
}

/** Malformed, oversized or too slow HTTP (counted by the caller in counters.httpErrors): answered when the socket still takes it, closed. */
function refuse(code: string, err: NodeJS.ErrnoException, socket: Socket): void {
  const { status } = clientErrorOf(err);
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const body = `${code}\n`;
  socket.end(`HTTP/1.1 ${status}\r\ncontent-type: text/plain\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`);
  // A peer that reads nothing would hold the socket open.
  setTimeout(() => socket.destroy(), 1000).unref();
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
