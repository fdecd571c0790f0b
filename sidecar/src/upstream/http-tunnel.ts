import { EventEmitter } from 'node:events';
import { Agent, type ClientRequest, request } from 'node:http';
import { NotHttpPeerError, TunnelHttpError, TunnelResponseTooLargeError, TunnelTimeoutError } from './errors';

/**
 * A socket-like carrier for the upstream frames over HTTP (transport `http`):
 * written bytes are POSTed to the collector's tunnel, and response bodies come
 * back as 'data'. One request at a time, so frames stay in order; when there is
 * nothing to send it still polls every `pollMs`, so acks, pings and
 * configuration reach the agent and the collector sees the session alive.
 *
 * Emits 'connect' (at once: HTTP has no session of its own), 'data', 'error',
 * 'close' — the events UpstreamSession uses of a net.Socket.
 */
export const TUNNEL_PATH = '/agent/tunnel';
const SESSION_HEADER = 'apm-tunnel-session';

export interface HttpTunnelOptions {
  host: string;
  port: number;
  pollMs: number;
  /** Per request: no response within this long fails the session. */
  requestTimeoutMs: number;
  maxResponseBytes: number;
}

export class HttpTunnelSocket extends EventEmitter {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private inFlight: ClientRequest | null = null;
  private inFlightBytes = 0;
  private session: string | null = null;
  private pollTimer: NodeJS.Timeout | null = null;
  private closed = false;
  private readonly agent = new Agent({ keepAlive: true, maxSockets: 1 });

  private pollMs: number;

  constructor(private readonly opts: HttpTunnelOptions) {
    super();
    this.pollMs = opts.pollMs;
    process.nextTick(() => {
      if (!this.closed) this.emit('connect');
    });
  }

  /** Poll at least this often (the collector expires sessions it does not hear from). */
  pollAtMost(ms: number): void {
    if (ms > 0 && ms < this.pollMs) this.pollMs = Math.max(10, Math.floor(ms));
  }

  get writableLength(): number {
    return this.pendingBytes + this.inFlightBytes;
  }

  write(chunk: Buffer): boolean {
    if (this.closed) return false;
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    if (this.inFlight === null) setImmediate(() => this.send());
    return true;
  }

  destroy(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.pollTimer !== null) clearTimeout(this.pollTimer);
    this.inFlight?.destroy();
    this.agent.destroy();
    this.emit('close');
  }

  private fail(err: Error): void {
    if (this.closed) return;
    this.emit('error', err);
    this.destroy();
  }

  private send(): void {
    if (this.closed || this.inFlight !== null) return;
    if (this.pollTimer !== null) clearTimeout(this.pollTimer);
    this.pollTimer = null;
    const body = Buffer.concat(this.pending);
    this.pending = [];
    this.pendingBytes = 0;
    this.inFlightBytes = body.length;
    const headers: Record<string, string | number> = { 'content-type': 'application/octet-stream', 'content-length': body.length };
    if (this.session !== null) headers[SESSION_HEADER] = this.session;
    const req = request({ host: this.opts.host, port: this.opts.port, path: TUNNEL_PATH, method: 'POST', headers, agent: this.agent });
    this.inFlight = req;
    req.setTimeout(this.opts.requestTimeoutMs, () => req.destroy(new TunnelTimeoutError(this.opts.requestTimeoutMs)));
    req.on('error', (err: NodeJS.ErrnoException) => {
      // The response did not parse as HTTP at all: say which port this probably is.
      this.fail(typeof err.code === 'string' && err.code.startsWith('HPE_') ? new NotHttpPeerError(err.code) : err);
    });
    req.on('response', (res) => {
      const sid = res.headers[SESSION_HEADER];
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > this.opts.maxResponseBytes) res.destroy(new TunnelResponseTooLargeError(this.opts.maxResponseBytes));
        else chunks.push(c);
      });
      res.on('error', (err) => this.fail(err));
      res.on('end', () => {
        if (this.closed) return;
        this.inFlight = null;
        this.inFlightBytes = 0;
        if (res.statusCode !== 200) {
          const text = Buffer.concat(chunks).toString('utf8').slice(0, 300);
          this.fail(new TunnelHttpError(res.statusCode ?? 0, text));
          return;
        }
        if (typeof sid === 'string') this.session = sid;
        const data = Buffer.concat(chunks);
        if (data.length > 0) this.emit('data', data);
        if (this.closed) return;
        if (this.pending.length > 0) this.send();
        else this.pollTimer = setTimeout(() => this.send(), this.pollMs);
      });
    });
    req.end(body);
  }
}
