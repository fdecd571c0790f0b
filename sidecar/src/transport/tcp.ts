import { hostname } from 'node:os';
import type { ApmError } from '@apm-sidecar/proto';
import { type AccessKey, type AgentInfo, Inner, encodeAgentInfo } from '@apm-sidecar/proto/upstream';
import type { Clock } from '../link/clock';
import { Link } from '../link/link';
import type { Pack } from '../pack';
import type { ReconnectSchedule } from '../reconnect-schedule';
import { type Carrier, UpstreamSession } from '../upstream/session';
import { UpstreamDownError } from '../upstream/errors';
import { AckWindow } from './ack-window';
import { type Done, type FrameBody, FrameBatcher } from './batcher';
import { dialerFor } from './carriers';
import type { Transport, TransportContext } from './transport';

export interface TcpTransportOptions {
  /** `http`: the same session tunnelled over HTTP POSTs to the collector's HTTP port. */
  carrier?: 'tcp' | 'http';
  hosts: string[];
  port: number;
  key: AccessKey;
  agentId: string;
  version: string;
  connectTimeoutMs: number;
  soTimeoutMs: number;
  /** net_send_max_bytes: the largest frame the sender builds. */
  maxSendBytes: number;
  schedule: ReconnectSchedule;
  /** Unreachable this long (since start or since the loss): standby. */
  standbyAfterMs: number;
  /** This many failed attempts (rounds over all hosts): muted. 0 = never. */
  muteAfterAttempts: number;
  /** Apps of the shims connected now (sent to the collector in AgentInfo). */
  apps: () => string[];
  random?: () => number;
  clock?: Clock;
  /** Opens the carrier of one attempt; by default the one `carrier` names (carriers.ts). */
  dial?: (host: string, port: number) => Carrier;
}

/**
 * `transport = tcp` (and `http`, the same session over the HTTP tunnel carrier): one
 * session to one of `server_host` (all on `server_port`), failing over to the next host.
 *
 * This class wires the parts, each with one job:
 *   link/link.ts    when to attempt, and the sidecar state (this class only reports up/down)
 *   batcher.ts      packs → frame bodies of at most net_send_max_bytes, in replay order
 *   ack-window.ts   frames sent and not yet acked; a pack is forgotten only on its frame's ack
 *   carriers.ts     the bytes' carrier: TCP socket or HTTP tunnel
 * When the session ends, unacked packs go back to their queues (reverse order) and are
 * sent again on the next session.
 */
export class TcpTransport implements Transport {
  readonly name: 'tcp' | 'http';
  readonly window = 1_000_000;
  private ctx: TransportContext | null = null;
  private link: Link | null = null;
  private session: UpstreamSession | null = null;
  private closing = false;
  private readonly inFlight = new AckWindow();
  private readonly batcher: FrameBatcher;
  private flushQueued = false;
  private lastError: { code: string; message: string; at: string } | null = null;
  private lastAckAt = 0;
  private activeSince = 0;
  private configVersion: number | null = null;
  readonly totals = { bytesSent: 0, framesSent: 0, sessions: 0 };
  /** Bytes and frames of the sessions that ended (a session counts its own). */
  private sessionBytesBase = 0;
  private sessionFramesBase = 0;
  /** Sessions ended by a typed error, by code (ERR_FRAME_GAP, ERR_ACK_GAP, ERR_REPLAY, ...). */
  private readonly sessionErrors: Record<string, number> = {};

  constructor(private readonly opts: TcpTransportOptions) {
    this.name = opts.carrier ?? 'tcp';
    this.batcher = new FrameBatcher(opts.maxSendBytes);
  }

  get ready(): boolean {
    return this.session?.isActive === true && this.inFlight.unackedBytes < 4 * this.opts.maxSendBytes;
  }

  start(ctx: TransportContext): void {
    this.ctx = ctx;
    const o = this.opts;
    this.link = new Link(ctx.state, ctx.log, {
      hosts: o.hosts.map((h) => `${h}:${o.port}`),
      schedule: o.schedule,
      standbyAfterMs: o.standbyAfterMs,
      muteAfterAttempts: o.muteAfterAttempts,
      ...(o.random !== undefined && { random: o.random }),
      ...(o.clock !== undefined && { clock: o.clock }),
    });
    this.link.start({ dial: (host) => this.dial(host) });
  }

  send(pack: Pack, done: Done): void {
    const full = this.batcher.add(pack, done);
    if (full.length > 0) this.sendFrames(full);
    if (!this.flushQueued) {
      this.flushQueued = true;
      setImmediate(() => {
        this.flushQueued = false;
        this.sendFrames(this.batcher.seal());
      });
    }
  }

  /** The apps behind this sidecar changed: tell the collector (it names the agent's app). */
  appsChanged(): void {
    const s = this.session;
    if (s === null || !s.isActive) return;
    s.sendText(Inner.AgentInfo, encodeAgentInfo(this.agentInfo()));
  }

  /** Who this agent is; its read timeout tells the collector how often a slow upload must hear from it. */
  private agentInfo(): AgentInfo {
    const o = this.opts;
    return { agentId: o.agentId, host: hostname(), version: o.version, apps: o.apps(), soTimeoutMs: o.soTimeoutMs };
  }

  reconnect(): { ok: boolean; message: string } {
    if (this.link === null) return { ok: false, message: 'not started' };
    return this.link.reconnect();
  }

  status(): Record<string, unknown> {
    return {
      transport: this.name,
      servers: this.opts.hosts.map((h) => `${h}:${this.opts.port}`),
      server: this.session?.address ?? null,
      connected: this.session?.isActive === true,
      activeSince: this.activeSince === 0 ? null : new Date(this.activeSince).toISOString(),
      ...this.link?.status(),
      lastError: this.lastError,
      lastAckAt: this.lastAckAt === 0 ? null : new Date(this.lastAckAt).toISOString(),
      lastAckAgeMs: this.lastAckAt === 0 ? null : Date.now() - this.lastAckAt,
      inFlightFrames: this.inFlight.length,
      unackedBytes: this.inFlight.unackedBytes,
      configVersion: this.configVersion,
      sessionErrors: { ...this.sessionErrors },
      ...this.totals,
    };
  }

  readiness(maxAckAgeMs: number): { ready: boolean; reason: string } {
    if (this.session?.isActive !== true) return { ready: false, reason: `upstream not connected${this.lastError ? `: ${this.lastError.message}` : ''}` };
    if (this.inFlight.length === 0) return { ready: true, reason: `connected to ${this.session.address}, nothing unacked` };
    const age = Date.now() - Math.max(this.lastAckAt, this.activeSince);
    return age <= maxAckAgeMs ? { ready: true, reason: `last ack ${age} ms ago` } : { ready: false, reason: `no ack for ${age} ms` };
  }

  close(): Promise<void> {
    this.closing = true;
    this.link?.close();
    this.session?.close('shutting down', null);
    return Promise.resolve();
  }

  // --- frames and acks -----------------------------------------------------------

  /**
   * Seal and send frame bodies (in the batcher's replay order); each is tracked until acked.
   * With no active session nothing can be sent: everything unacked goes back to the sender.
   */
  private sendFrames(frames: FrameBody[]): void {
    const s = this.session;
    if (s === null || !s.isActive) {
      this.failAll(new UpstreamDownError('upstream not connected'), frames);
      return;
    }
    for (const f of frames) {
      const counter = f.key === 'numeric' ? s.sendNumeric(Inner.MetricBatch, f.body) : s.sendText(Inner.TextBatch, f.body);
      this.inFlight.track(counter, f.dones, f.body.length);
    }
    this.totals.bytesSent = this.sessionBytesBase + s.bytesSent;
    this.totals.framesSent = this.sessionFramesBase + s.framesSent;
  }

  /** Any ack but the oldest frame's means a frame was not stored: the session ends, all unacked is resent. */
  private acked(s: UpstreamSession, counter: number): void {
    const dones = this.inFlight.ack(counter);
    if (!Array.isArray(dones)) {
      s.close(dones.message, dones);
      return;
    }
    this.lastAckAt = Date.now();
    for (const d of dones) d();
    this.ctx?.wake();
  }

  /** Everything not acked goes back to the sender, newest first (in flight, then sealed, then batched). */
  private failAll(err: Error, sealed: FrameBody[] = []): void {
    const all = [...this.inFlight.takeDones(), ...sealed.flatMap((f) => f.dones), ...this.batcher.takeDones()];
    for (let i = all.length - 1; i >= 0; i--) (all[i] as Done)(err);
  }

  // --- connection management ------------------------------------------------

  /** One attempt, when the Link says so. */
  private dial(hostIndex: number): void {
    if (this.closing || this.session !== null) return;
    const ctx = this.ctx as TransportContext;
    const link = this.link as Link;
    const host = this.opts.hosts[hostIndex] as string;
    let session: UpstreamSession | null = null;
    session = new UpstreamSession(
      {
        host,
        port: this.opts.port,
        key: this.opts.key,
        agentInfo: this.agentInfo(),
        connectTimeoutMs: this.opts.connectTimeoutMs,
        soTimeoutMs: this.opts.soTimeoutMs,
        maxFrameBytes: Math.max(this.opts.maxSendBytes, 1 << 20),
        dial: this.opts.dial ?? dialerFor(this.name, this.opts),
      },
      {
        active: (config) => {
          if (session !== this.session) return;
          this.activeSince = Date.now();
          this.configVersion = config.configVersion;
          this.lastError = null;
          this.totals.sessions++;
          link.up(`connected to ${host}:${this.opts.port}; configuration and license received`);
          // Shims may have connected while the handshake ran: the AgentInfo sent with it did not name them.
          if (this.opts.apps().length > 0) this.appsChanged();
          ctx.wake();
        },
        ack: (counter) => {
          if (session === this.session) this.acked(session as UpstreamSession, counter);
        },
        drain: () => {
          if (session === this.session) ctx.wake();
        },
        closed: (cause, error) => {
          if (session !== this.session) return;
          this.sessionClosed(session as UpstreamSession, cause, error);
        },
      },
    );
    this.session = session;
  }

  private sessionClosed(s: UpstreamSession, cause: string, error: ApmError | null): void {
    const ctx = this.ctx as TransportContext;
    this.sessionBytesBase += s.bytesSent;
    this.sessionFramesBase += s.framesSent;
    this.session = null;
    this.activeSince = 0;
    this.failAll(new UpstreamDownError(cause));
    if (error !== null) {
      this.lastError = { code: error.code, message: cause, at: new Date().toISOString() };
      this.sessionErrors[error.code] = (this.sessionErrors[error.code] ?? 0) + 1;
    }
    if (this.closing) return;
    ctx.log.warn({ server: s.address, code: error?.code, cause }, `upstream session ended: ${cause}`);
    (this.link as Link).down(cause);
  }
}
