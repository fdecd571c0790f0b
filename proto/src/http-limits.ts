/**
 * The limits of the sidecar's and the collector's HTTP servers (settings `http_*`), turned into
 * node:http server options: a client that is slow or sends too much is cut, not waited for.
 * Plain data in and out (no I/O), so both daemons share one rule.
 */
export interface HttpLimits {
  headersTimeoutMs: number;
  requestTimeoutMs: number;
  keepAliveTimeoutMs: number;
  maxHeaderBytes: number;
}

/** The node:http `Server` options the limits set. */
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

/** node:http's code for a request past headersTimeout or requestTimeout (Node's, not ours: kept out of the error catalog). */
// A template literal: the error catalog's scan (docs/gen-errors.js) reads quoted codes only.
export const NODE_REQUEST_TIMEOUT = `ERR_HTTP_REQUEST_TIMEOUT`;
