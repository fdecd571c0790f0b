import { hostname } from 'node:os';
import { type ApmError, Writer } from '@apm-sidecar/proto';
import { type AccessKey, AckGapError, Inner, type TextItem, encodeAgentInfo } from '@apm-sidecar/proto/upstream';
import type { Pack } from '../pack';
import type { Clock } from '../link/clock';
import { Link } from '../link/link';
import type { ReconnectSchedule } from '../reconnect-schedule';
import { HttpTunnelSocket } from '../upstream/http-tunnel';
import { UpstreamSession } from '../upstream/session';
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
}

type Done = (err?: Error) => void;

interface InFlight {
  counter: number;
  dones: Done[];
  bytes: number;
}

/** Packs for one frame being assembled. */
class Batch {
  readonly dones: Done[] = [];
  bytes = 0;
  constructor(readonly parts: Buffer[] = []) {}
}

const ENVELOPE = 64;

/**
 * `transport = tcp`: one TCP session to one of `server_host` (all on
 * `server_port`), failing over to the next host.
 *
 * Packs are packed into frames of at most net_send_max_bytes — metric packs
 * in numeric frames, everything else in text frames — and forgotten only when
 * the collector acks the frame. When the session ends, unacked packs go back
 * to their queues (reverse order) and are sent again on the next session.
 *
 * When to attempt, and the sidecar state, are the Link's (link/link.ts): this
 * class dials when the Link says so and reports each session's end to it.
 */
export class TcpTransport implements Transport {
  readonly name: 'tcp' | 'http';
  readonly window = 1_000_000;
  private ctx: TransportContext | null = null;
  private link: Link | null = null;
  private session: UpstreamSession | null = null;
  private closing = false;
  private inFlight: InFlight[] = [];
  private unackedBytes = 0;
  /** Registrations get their own text frame, sealed before the metric frame (replay order, DESIGN §6). */
  private btBatch = new Batch();
  private metricBatch = new Batch();
  private textBatch = new Batch();
  private flushQueued = false;
  private lastError: { code: string; message: string; at: string } | null = null;
  private lastAckAt = 0;
  private activeSince = 0;
  private configVersion: number | null = null;
  readonly totals = { bytesSent: 0, framesSent: 0, sessions: 0 };
  /** Sessions ended by a typed error, by code (ERR_FRAME_GAP, ERR_ACK_GAP, ERR_REPLAY, ...). */
  private readonly sessionErrors: Record<string, number> = {};

  constructor(private readonly opts: TcpTransportOptions) {
    this.name = opts.carrier ?? 'tcp';
  }

  get ready(): boolean {
    return this.session?.isActive === true && this.unackedBytes < 4 * this.opts.maxSendBytes;
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
    if (pack.kind === 'metrics') {
      // Encoded once, when its interval closed (the retention keeps the same bytes).
      this.add(this.metricBatch, pack.body, done, 'metric');
    } else if (pack.kind === 'btRegistration') {
      this.add(this.btBatch, Buffer.from(JSON.stringify(textItem(pack))), done, 'bt');
    } else {
      this.add(this.textBatch, Buffer.from(JSON.stringify(textItem(pack))), done, 'text');
    }
  }

  /** The apps behind this sidecar changed: tell the collector (it names the agent's app). */
  appsChanged(): void {
    const s = this.session;
    if (s === null || !s.isActive) return;
    s.sendText(Inner.AgentInfo, encodeAgentInfo({ agentId: this.opts.agentId, host: hostname(), version: this.opts.version, apps: this.opts.apps() }));
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
      unackedBytes: this.unackedBytes,
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

  // --- batching and acks -------------------------------------------------------

  private add(batch: Batch, bytes: Buffer, done: Done, kind: 'bt' | 'metric' | 'text'): void {
    if (batch.bytes > 0 && batch.bytes + bytes.length + ENVELOPE > this.opts.maxSendBytes) this.flush();
    const b = kind === 'metric' ? this.metricBatch : kind === 'bt' ? this.btBatch : this.textBatch;
    b.parts.push(bytes);
    b.dones.push(done);
    b.bytes += bytes.length + 1;
    if (!this.flushQueued) {
      this.flushQueued = true;
      setImmediate(() => this.flush());
    }
  }

  /**
   * Seal what is batched into at most three frames, in replay order (DESIGN §6):
   * registrations (text), then metric packs (numeric), then the other text items
   * (events, snapshots, traces, active stacks). The sender hands packs over in that
   * order too (queue1's lanes), so the collector stores them in that order.
   */
  private flush(): void {
    this.flushQueued = false;
    const s = this.session;
    if (s === null || !s.isActive) {
      this.failAll(new Error('upstream not connected'));
      return;
    }
    const bt = this.btBatch;
    if (bt.parts.length > 0) {
      this.btBatch = new Batch();
      this.sealText(s, bt);
    }
    const m = this.metricBatch;
    if (m.parts.length > 0) {
      this.metricBatch = new Batch();
      const w = new Writer(m.bytes + 16);
      w.varint(m.parts.length);
      for (const p of m.parts) w.bytes(p);
      const body = w.body();
      this.track(s.sendNumeric(Inner.MetricBatch, body), m.dones, body.length);
    }
    const t = this.textBatch;
    if (t.parts.length > 0) {
      this.textBatch = new Batch();
      this.sealText(s, t);
    }
    this.totals.bytesSent = this.sessionBytesBase + s.bytesSent;
    this.totals.framesSent = this.sessionFramesBase + s.framesSent;
  }

  private sealText(s: UpstreamSession, t: Batch): void {
    const body = Buffer.concat([Buffer.from('{"items":['), ...t.parts.flatMap((p, i) => (i === 0 ? [p] : [COMMA, p])), Buffer.from(']}')]);
    this.track(s.sendText(Inner.TextBatch, body), t.dones, body.length);
  }

  private sessionBytesBase = 0;
  private sessionFramesBase = 0;

  private track(counter: number, dones: Done[], bytes: number): void {
    this.inFlight.push({ counter, dones, bytes });
    this.unackedBytes += bytes;
  }

  /**
   * An ack covers exactly one data frame: the oldest unacked one (the collector stores and acks in
   * order). Any other ack means a frame was not stored: the session ends and all unacked is resent.
   */
  private acked(s: UpstreamSession, counter: number): void {
    const head = this.inFlight[0];
    if (head === undefined || head.counter !== counter) {
      const err = new AckGapError(counter, head?.counter ?? null);
      s.close(err.message, err);
      return;
    }
    this.lastAckAt = Date.now();
    this.inFlight.shift();
    this.unackedBytes -= head.bytes;
    for (const d of head.dones) d();
    this.ctx?.wake();
  }

  /** Everything not acked goes back to the sender, newest first. */
  private failAll(err: Error): void {
    const all: Done[] = [];
    for (const f of this.inFlight) all.push(...f.dones);
    all.push(...this.btBatch.dones, ...this.metricBatch.dones, ...this.textBatch.dones);
    this.inFlight = [];
    this.unackedBytes = 0;
    this.btBatch = new Batch();
    this.metricBatch = new Batch();
    this.textBatch = new Batch();
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
        agentInfo: { agentId: this.opts.agentId, host: hostname(), version: this.opts.version, apps: this.opts.apps() },
        connectTimeoutMs: this.opts.connectTimeoutMs,
        soTimeoutMs: this.opts.soTimeoutMs,
        maxFrameBytes: Math.max(this.opts.maxSendBytes, 1 << 20),
        ...(this.name === 'http' && {
          dial: (h: string, p: number) =>
            new HttpTunnelSocket({
              host: h,
              port: p,
              pollMs: Math.max(10, Math.min(1000, Math.floor(this.opts.soTimeoutMs / 6))),
              requestTimeoutMs: this.opts.soTimeoutMs,
              maxResponseBytes: Math.max(this.opts.maxSendBytes, 1 << 20) * 4,
            }),
        }),
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
    this.failAll(new Error(cause));
    if (error !== null) {
      this.lastError = { code: error.code, message: cause, at: new Date().toISOString() };
      this.sessionErrors[error.code] = (this.sessionErrors[error.code] ?? 0) + 1;
    }
    if (this.closing) return;
    ctx.log.warn({ server: s.address, code: error?.code, cause }, `upstream session ended: ${cause}`);
    (this.link as Link).down(cause);
  }
}

const COMMA = Buffer.from(',');

function textItem(pack: Exclude<Pack, { kind: 'metrics' }>): TextItem {
  switch (pack.kind) {
    case 'trace':
      return { kind: 'trace', origin: pack.origin, trace: pack.trace };
    case 'activeStack':
      return { kind: 'activeStack', origin: pack.origin, stack: pack.stack };
    case 'event':
      return { kind: 'event', origin: pack.origin, event: pack.event };
    case 'snapshot':
      return { kind: 'snapshot', origin: pack.origin, snapshot: pack.snapshot };
    case 'btRegistration':
      return { kind: 'btRegistration', origin: pack.origin, name: pack.name, ts: pack.ts };
  }
}
