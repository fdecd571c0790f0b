import type { IncomingMessage, ServerResponse } from 'node:http';

/** The HTTP port's limits (settings http_*): a client that is slow or sends too much is cut, not waited for. */
export interface HttpLimits {
  headersTimeoutMs: number;
  requestTimeoutMs: number;
  keepAliveTimeoutMs: number;
  maxHeaderBytes: number;
}

export interface ServerLimits {
  maxHeaderSize: number;
  headersTimeout: number;
  requestTimeout: number;
  keepAliveTimeout: number;
  connectionsCheckingInterval: number;
}

/**
 * node:http enforces headersTimeout and requestTimeout only when it checks its connections, every
 * connectionsCheckingInterval (30 s by default): checked at a quarter of the shorter deadline, a
 * slow client is cut within 1.25 × the deadline. Node refuses a headers deadline over the request
 * deadline, so the headers deadline is at most the request one.
 */
export function serverLimits(l: HttpLimits): ServerLimits {
  const headersTimeout = Math.min(l.headersTimeoutMs, l.requestTimeoutMs);
  return {
    maxHeaderSize: l.maxHeaderBytes,
    headersTimeout,
    requestTimeout: l.requestTimeoutMs,
    keepAliveTimeout: l.keepAliveTimeoutMs,
    connectionsCheckingInterval: Math.max(10, Math.min(1000, Math.floor(headersTimeout / 4))),
  };
}

/** What a request node:http refused before a route saw it is counted as, in rejected. */
export type HttpRefusal = 'badHttp' | 'headersTooLarge' | 'httpTimeout';

/** node:http's code for a request past headersTimeout or requestTimeout (Node's, not ours: kept out of the error catalog). */
const NODE_REQUEST_TIMEOUT = `ERR_HTTP_REQUEST_TIMEOUT`;

/** The rejected reason, stable code and status line of a request node:http refused. */
export function clientErrorOf(err: NodeJS.ErrnoException): { reason: HttpRefusal; code: string; status: string; message: string } {
  if (err.code === 'HPE_HEADER_OVERFLOW')
    return { reason: 'headersTooLarge', code: 'ERR_HEADERS_TOO_LARGE', status: '431 Request Header Fields Too Large', message: 'request headers too large' };
  if (err.code === NODE_REQUEST_TIMEOUT)
    return { reason: 'httpTimeout', code: 'ERR_REQUEST_TIMEOUT', status: '408 Request Timeout', message: 'the request did not arrive in time' };
  return { reason: 'badHttp', code: 'ERR_BAD_REQUEST', status: '400 Bad Request', message: 'malformed HTTP request' };
}

/** An exchange is in flight from its request until the request was read to its end and its answer finished. */
export function trackExchange(inFlight: WeakSet<object>, req: IncomingMessage, res: ServerResponse): void {
  const socket = req.socket;
  inFlight.add(socket);
  const settle = (): void => {
    if (req.complete && res.writableFinished) inFlight.delete(socket);
  };
  req.once('end', settle);
  res.once('finish', settle);
}
