import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { type ApmError, FrameTooLargeError } from '@apm-sidecar/proto';
import { type AgentLink, PREAUTH_MAX_FRAME_BYTES, type RejectReason, type Wire } from './agent-connection';
import type { AgentServer } from './agent-server';
import type { Clock } from './clock';
import { HandshakeTimeoutError } from './errors';

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
 *
 * Before authentication: the first request (the ClientHello) is at most
 * FIRST_BODY_MAX_BYTES and arrives within handshake_timeout_ms, and a session
 * exists only once that hello was accepted; later bodies stream into the
 * session's frame parser, which holds frames to PREAUTH_MAX_FRAME_BYTES until
 * the agent proved its key. Sessions count against max_connections(_per_ip).
 */
export const TUNNEL_PATH = '/agent/tunnel';
export const SESSION_HEADER = 'apm-tunnel-session';

class TunnelWire extends EventEmitter implements Wire {
  private outbox: Buffer[] = [];
  /** The agent connection this session carries. */
  link: AgentLink | null = null;
  private closed = false;
  lastRequestAt: number;

  constructor(
    readonly remoteAddress: string | undefined,
    private readonly clock: Clock,
  ) {
    super();
    this.lastRequestAt = clock.now();
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
    this.clock.setTimeout(() => this.destroy(), 2000);
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
  /** The first request (no session yet) must arrive whole within this long. */
  handshakeTimeoutMs: number;
  maxBodyBytes: number;
  /** Session expiry and the first request's deadline (default: the agent server's clock). */
  clock?: Clock;
}

/** The first request carries the ClientHello alone: its body is held to the pre-authentication frame limit. */
export const FIRST_BODY_MAX_BYTES = PREAUTH_MAX_FRAME_BYTES;

export class Tunnel {
  private readonly sessions = new Map<string, TunnelWire>();
  private readonly clock: Clock;
  private readonly expireEveryMs: number;
  private timer: unknown = null;

  constructor(private readonly opts: TunnelOptions) {
    this.clock = opts.clock ?? opts.agents.clock;
    this.expireEveryMs = Math.max(10, Math.min(1000, opts.sessionTimeoutMs / 4));
    this.scheduleExpiry();
  }

  private scheduleExpiry(): void {
    this.timer = this.clock.setTimeout(() => {
      this.expire();
      this.scheduleExpiry();
    }, this.expireEveryMs);
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
    const id = req.headers[SESSION_HEADER];
    if (typeof id === 'string' && id.length > 0) this.continueSession(req, res, id);
    else this.firstRequest(req, res);
    return true;
  };

  /**
   * No session yet: the body is at most FIRST_BODY_MAX_BYTES and must arrive within
   * handshake_timeout_ms. A session (and its id) exists only once the ClientHello in it
   * was accepted; a refused hello gets its clear-text refusal and nothing is kept.
   */
  private firstRequest(req: IncomingMessage, res: ServerResponse): void {
    const agents = this.opts.agents;
    const remote = req.socket.remoteAddress;
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const refuse = (status: number, reason: RejectReason, err: ApmError): void => {
      if (done) return;
      done = true;
      this.clock.clearTimeout(timer);
      agents.refused(reason, err, remote);
      failAndHangUp(req, res, status, err.code, err.message);
    };
    const timer = this.clock.setTimeout(
      () => refuse(408, 'handshakeTimeout', new HandshakeTimeoutError(this.opts.handshakeTimeoutMs)),
      this.opts.handshakeTimeoutMs,
    );
    req.on('data', (c: Buffer) => {
      if (done) return;
      size += c.length;
      if (size > FIRST_BODY_MAX_BYTES) {
        refuse(413, 'tooLarge', new FrameTooLargeError(size, FIRST_BODY_MAX_BYTES));
        return;
      }
      chunks.push(c);
    });
    req.on('error', () => {
      done = true;
      this.clock.clearTimeout(timer);
    });
    req.on('end', () => {
      if (done) return;
      done = true;
      this.clock.clearTimeout(timer);
      const wire = new TunnelWire(remote, this.clock);
      const link = agents.attach(wire, 'http');
      if (link === null) {
        fail(res, 503, 'ERR_TOO_MANY_CONNECTIONS', 'the collector holds as many agent sessions as it allows', { connection: 'close' });
        return;
      }
      if (size > 0) wire.emit('data', Buffer.concat(chunks));
      wire.link = link;
      // The answer carries what the body's frames produced: it waits for them to be handled.
      void link.idle.then(() => {
        const out = wire.take();
        if (!link.helloAccepted) {
          // Refused (or not a ClientHello): answer the refusal, keep nothing.
          wire.destroy();
          reply(res, out, null);
          return;
        }
        const sid = randomBytes(18).toString('base64url');
        wire.once('close', () => this.sessions.delete(sid));
        this.sessions.set(sid, wire);
        reply(res, out, sid);
      });
    });
  }

  /**
   * A request of an existing session: its bytes go to the connection as they arrive, so its
   * frame parser bounds what is held (PREAUTH_MAX_FRAME_BYTES until the agent is authenticated).
   */
  private continueSession(req: IncomingMessage, res: ServerResponse, sid: string): void {
    const wire = this.sessions.get(sid);
    if (wire === undefined || wire.isClosed) {
      req.resume();
      fail(res, 410, 'ERR_TUNNEL_SESSION', 'unknown or expired tunnel session: start a new one');
      return;
    }
    wire.lastRequestAt = this.clock.now();
    let size = 0;
    let done = false;
    req.on('data', (c: Buffer) => {
      if (done) return;
      size += c.length;
      if (size > this.opts.maxBodyBytes) {
        done = true;
        this.opts.agents.refused('tooLarge', new FrameTooLargeError(size, this.opts.maxBodyBytes), wire.remoteAddress);
        failAndHangUp(req, res, 413, 'ERR_TOO_LARGE', `a tunnel request body may carry at most ${this.opts.maxBodyBytes} bytes`);
        // The body was cut inside a frame: this session cannot go on.
        this.sessions.delete(sid);
        wire.destroy();
        return;
      }
      wire.emit('data', c);
    });
    req.on('error', () => {
      done = true;
    });
    req.on('end', () => {
      if (done) return;
      done = true;
      wire.lastRequestAt = this.clock.now();
      // Acks of the body's frames go in this answer: it waits until they are stored (the agent
      // sends its next request after this answer, so a session holds one body's frames at most).
      const link = wire.link;
      if (link === null) reply(res, wire.take(), sid);
      else void link.idle.then(() => reply(res, wire.take(), sid));
    });
  }

  private expire(): void {
    const now = this.clock.now();
    for (const [id, w] of this.sessions) {
      if (now - w.lastRequestAt >= this.opts.sessionTimeoutMs) {
        this.opts.log.warn({ session: id.slice(0, 6) }, `tunnel session had no request for ${this.opts.sessionTimeoutMs} ms: expired`);
        this.sessions.delete(id);
        w.destroy();
      }
    }
  }

  close(): void {
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    this.timer = null;
    for (const w of this.sessions.values()) w.destroy();
    this.sessions.clear();
  }
}

/** Answer, then drop the connection: the rest of the body is not read. */
function failAndHangUp(req: IncomingMessage, res: ServerResponse, status: number, code: string, message: string): void {
  req.pause();
  fail(res, status, code, message, { connection: 'close' });
  const hangUp = (): void => {
    req.socket.destroy();
  };
  res.once('finish', hangUp);
  // A peer that reads nothing never lets the answer finish.
  setTimeout(hangUp, 1000).unref();
}

function reply(res: ServerResponse, out: Buffer, sid: string | null): void {
  const headers: Record<string, string | number> = { 'content-type': 'application/octet-stream', 'content-length': out.length, 'cache-control': 'no-store' };
  if (sid !== null) headers[SESSION_HEADER] = sid;
  res.writeHead(200, headers);
  res.end(out);
}

function fail(res: ServerResponse, status: number, code: string, message: string, headers: Record<string, string> = {}): void {
  const body = JSON.stringify({ error: { code, message } });
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...headers });
  res.end(body);
}
