import type { IncomingMessage, ServerResponse } from 'node:http';
import { NODE_REQUEST_TIMEOUT } from '@apm-sidecar/proto';

export type { HttpLimits } from '@apm-sidecar/proto';

/** What a request node:http refused before a route saw it is counted as, in rejected. */
export type HttpRefusal = 'badHttp' | 'headersTooLarge' | 'httpTimeout';

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
