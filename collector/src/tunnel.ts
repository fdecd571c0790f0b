import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { AgentServer, Wire } from './agent-server';

/**
 * The HTTP tunnel (Introscope's "HTTP tunneling"): the same upstream frames as
 * the TCP session, carried in HTTP bodies.
 *
 *   POST /agent/tunnel                 body: frames from the agent (may be empty: a poll)
 *     apm-tunnel-session: <id>         absent on the first request; the response names it
 *   200  body: frames for the agent (acks, configuration, pings, errors)
 *   410  the session is unknown or expired: start a new one (a new handshake)
 *
 * The collector waits for the agent's requests, so it can only notice an agent
 * gone by their absence: a session with no request for
 * tunnel_session_timeout_ms is expired and the agent marked disconnected.
 */
export const TUNNEL_PATH = '/agent/tunnel';
export const SESSION_HEADER = 'apm-tunnel-session';

class TunnelWire extends EventEmitter implements Wire {
  private outbox: Buffer[] = [];
  private closed = false;
  lastRequestAt = Date.now();

  constructor(readonly remoteAddress: string | undefined) {
    super();
  }

  get isClosed(): boolean {
    return this.closed;
  }

  write(chunk: Buffer): boolean {
    if (!this.closed) this.outbox.push(chunk);
    return true;
  }

  /** What is waiting for the agent, taken for a response body. */
  take(): Buffer {
    const out = Buffer.concat(this.outbox);
    this.outbox = [];
    return out;
  }

  end(): void {
    // Whatever is in the outbox still goes out with the next response; then the session is over.
    setTimeout(() => this.destroy(), 2000).unref();
  }

  destroy(): void {
    if (this.closed) return;
    this.closed = true;
    this.emit('close');
  }
}

export interface TunnelOptions {
  agents: AgentServer;
  log: Logger;
  sessionTimeoutMs: number;
  maxBodyBytes: number;
}

export class Tunnel {
  private readonly sessions = new Map<string, TunnelWire>();
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly opts: TunnelOptions) {
    this.timer = setInterval(() => this.expire(), Math.max(10, Math.min(1000, opts.sessionTimeoutMs / 4)));
    this.timer.unref();
  }

  get size(): number {
    return this.sessions.size;
  }

  /** The HTTP server's extraRoutes hook: true when the request was the tunnel's. */
  route = (req: IncomingMessage, res: ServerResponse): boolean => {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== TUNNEL_PATH) return false;
    if (req.method !== 'POST') {
      fail(res, 405, 'ERR_METHOD', 'the tunnel takes POST', { allow: 'POST' });
      return true;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let tooBig = false;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > this.opts.maxBodyBytes) {
        tooBig = true;
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('error', () => {});
    req.on('close', () => {
      if (tooBig && !res.headersSent) fail(res, 413, 'ERR_TOO_LARGE', `a tunnel request body may carry at most ${this.opts.maxBodyBytes} bytes`);
    });
    req.on('end', () => {
      if (!tooBig) this.handle(req, res, Buffer.concat(chunks));
    });
    return true;
  };

  private handle(req: IncomingMessage, res: ServerResponse, body: Buffer): void {
    const id = req.headers[SESSION_HEADER];
    let wire: TunnelWire | undefined;
    let sid: string;
    if (typeof id === 'string' && id.length > 0) {
      wire = this.sessions.get(id);
      sid = id;
      if (wire === undefined || wire.isClosed) {
        fail(res, 410, 'ERR_TUNNEL_SESSION', 'unknown or expired tunnel session: start a new one');
        return;
      }
    } else {
      sid = randomBytes(18).toString('base64url');
      wire = new TunnelWire(req.socket.remoteAddress);
      const w = wire;
      w.once('close', () => this.sessions.delete(sid));
      this.sessions.set(sid, w);
      this.opts.agents.attach(w, 'http');
    }
    wire.lastRequestAt = Date.now();
    if (body.length > 0) wire.emit('data', body);
    const out = wire.take();
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': out.length, [SESSION_HEADER]: sid, 'cache-control': 'no-store' });
    res.end(out);
  }

  private expire(): void {
    const now = Date.now();
    for (const [id, w] of this.sessions) {
      if (now - w.lastRequestAt >= this.opts.sessionTimeoutMs) {
        this.opts.log.warn({ session: id.slice(0, 6) }, `tunnel session had no request for ${this.opts.sessionTimeoutMs} ms: expired`);
        this.sessions.delete(id);
        w.destroy();
      }
    }
  }

  close(): void {
    clearInterval(this.timer);
    for (const w of this.sessions.values()) w.destroy();
    this.sessions.clear();
  }
}

function fail(res: ServerResponse, status: number, code: string, message: string, headers: Record<string, string> = {}): void {
  const body = JSON.stringify({ error: { code, message } });
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...headers });
  res.end(body);
}
