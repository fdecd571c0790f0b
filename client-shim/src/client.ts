import { channel } from 'node:diagnostics_channel';
import {
  DEFAULT_MAX_FRAME_BYTES,
  type ErrorMessage,
  MessageType,
  MetricKind,
  type MetricKindCode,
  PROTOCOL_VERSION,
  type ProfilePack,
  type StateChange,
  type Welcome,
  Writer,
  encodeActiveStack,
  encodeBtRegistration,
  encodeEvent,
  encodeHeartbeat,
  encodeHello,
  encodeTrace,
  writeMetricsHeader,
} from '@apm-sidecar/proto';
import { Connection, type ConnectionHandler } from './connection';
import type { HttpInstrumentation, HttpInstrumentationOptions } from './http-instrumentation';
import { randomHex } from './ids';
import { type Counter, DroppingHandle, type Gauge, type Histogram, MetricRegistry, packPoints } from './metrics';
import { type ConnectOptions, MAX_TIMER_MS, option, positive, resolveSocket } from './options';
import { Outbox } from './outbox';
import { type EventInput, eventPack, snapshotFrame, stackFrames, tagValue } from './packs';
import { type ShimState, type ShimStats, shimState } from './state';
import { ActiveTransaction, NoopTransaction, type Transaction, type TransactionSink, noopHeaders, readIncoming } from './transaction';

export const SHIM_VERSION = '0.1.0';

export type { ConnectOptions } from './options';
export type { EventInput } from './packs';
export type { ShimState, ShimStats } from './state';

const stateChannel = channel('apm-sidecar:shim:state');
const dropChannel = channel('apm-sidecar:shim:drop');
const refusedChannel = channel('apm-sidecar:shim:refused');

const MAX_BT_NAMES = 10000;
const TX_DURATION = 'apm.transaction.duration';
const TX_ERRORS = 'apm.transaction.errors';

/**
 * The application's handle on apm-sidecar. No method throws into the app; bad
 * input and overflow are counted in stats().dropped by reason.
 */
export class ApmClient implements ConnectionHandler, TransactionSink {
  readonly app: string;
  readonly instanceId = randomHex(16);
  /**
   * Binds instanceId to this process at the sidecar (sent in Hello only): a peer
   * that learns the id cannot act for this instance. Never exposed or logged.
   */
  readonly #secret = randomHex(32);
  readonly #conn: Connection;
  readonly #registry: MetricRegistry;
  /** What waits for the sidecar: durable and best-effort frames, flush() waiters. */
  readonly #out: Outbox;
  readonly #explicitBufferBytes: boolean;
  readonly #closeTimeoutMs: number;
  readonly #explicitFlushMs: number | undefined;
  #flushMs: number;
  #maxFrameBytes = DEFAULT_MAX_FRAME_BYTES;
  #flushTimer: NodeJS.Timeout | null = null;
  #windowStart = Date.now();
  #seq = 0;
  #state: ShimState = 'connecting';
  #closing: Promise<void> | null = null;
  #http: HttpInstrumentation | null = null;
  readonly #btNames = new Set<string>();
  /** Per transaction name: its duration histogram and error counter (bound once, not looked up per call). */
  readonly #txHandles = new Map<string, { duration: Histogram; errors: Counter }>();
  readonly #writer = new Writer(16 * 1024);
  readonly #body = new Writer(16 * 1024);
  readonly #dropped: Record<string, number> = {};
  /** Last error the sidecar reported (for diagnostics). */
  lastSidecarError: ErrorMessage | null = null;
  /** Why the shim last refused to connect (e.g. ERR_SOCKET_OWNER); null once connected. */
  lastConnectError: ErrorMessage | null = null;

  constructor(opts: ConnectOptions = {}) {
    const o: object = typeof opts === 'object' && opts !== null ? opts : {};
    const app = option(o, 'app');
    this.app = typeof app === 'string' && app.length > 0 ? app.slice(0, 256) : 'app';
    this.#explicitBufferBytes = option(o, 'bufferBytes') !== undefined;
    this.#closeTimeoutMs = Math.min(positive(option(o, 'closeTimeoutMs'), 2000), MAX_TIMER_MS);
    const flushMs = option(o, 'flushMs');
    this.#explicitFlushMs = flushMs === undefined ? undefined : Math.min(positive(flushMs, 1000), MAX_TIMER_MS);
    this.#flushMs = this.#explicitFlushMs ?? 1000;
    this.#registry = new MetricRegistry(this, Math.floor(positive(option(o, 'maxSeries'), 10000)), this.app);
    const socketOpt = option(o, 'socket');
    const socket = typeof socketOpt === 'string' ? socketOpt : undefined;
    const reconnectMinMs = Math.min(positive(option(o, 'reconnectMinMs'), 100), MAX_TIMER_MS);
    this.#conn = new Connection(
      {
        path: () => resolveSocket(socket),
        hello: () =>
          encodeHello({
            v: PROTOCOL_VERSION,
            app: this.app,
            pid: process.pid,
            shimVersion: SHIM_VERSION,
            instanceId: this.instanceId,
            secret: this.#secret,
            seq: this.#seq,
            host: (require('node:os') as typeof import('node:os')).hostname(),
            runtime: `node ${process.version}`,
          }),
        reconnectMinMs,
        reconnectMaxMs: Math.min(Math.max(positive(option(o, 'reconnectMaxMs'), 5000), reconnectMinMs), MAX_TIMER_MS),
        stallTimeoutMs: Math.min(positive(option(o, 'stallTimeoutMs'), 5000), MAX_TIMER_MS),
      },
      this,
    );
    this.#out = new Outbox(this.#conn, positive(option(o, 'bufferBytes'), 8 * 1024 * 1024), this, this.#btNames);
    this.#startFlushTimer();
    this.#conn.start();
    const http = option(o, 'instrumentHttp');
    if (http === true || (typeof http === 'object' && http !== null)) this.instrumentHttp(http);
  }

  /** HTTP auto-instrumentation (see http-instrumentation.ts); once per process, undone by close(). */
  instrumentHttp(opts?: HttpInstrumentationOptions | boolean): HttpInstrumentation {
    if (this.#http === null && this.#closing === null) {
      // Loaded on first use (bundled apart as dist/shim-http.js): an app that does not instrument
      // HTTP does not load it.
      const { instrumentHttp } = require('./http-instrumentation') as typeof import('./http-instrumentation');
      this.#http = instrumentHttp(this, opts);
    }
    return this.#http ?? { stop() {} };
  }

  get state(): ShimState {
    return this.#state;
  }

  counter(name: string, tags?: Record<string, string | number | boolean>): Counter {
    return this.#metric(MetricKind.Counter, name, tags);
  }

  gauge(name: string, tags?: Record<string, string | number | boolean>): Gauge {
    return this.#metric(MetricKind.Gauge, name, tags);
  }

  histogram(name: string, tags?: Record<string, string | number | boolean>): Histogram {
    return this.#metric(MetricKind.Histogram, name, tags);
  }

  /** The registry's handle for the series; one that only counts drops if the registry throws (a hostile name or tags object). */
  #metric(kind: MetricKindCode, name: string, tags: Record<string, string | number | boolean> | undefined): Counter & Gauge & Histogram {
    try {
      return this.#registry.get(kind, name, tags) as Counter & Gauge & Histogram;
    } catch {
      return new DroppingHandle(this, 'invalid');
    }
  }

  /** A transaction for an incoming request; a no-op one in standby or muted, or when the caller said notxdetect=true. */
  startTransaction(name: string, incomingHeaders?: unknown): Transaction {
    try {
      const incoming = incomingHeaders === undefined ? undefined : readIncoming(incomingHeaders);
      const label = typeof name === 'string' && name.length > 0 ? name.slice(0, 1024) : '';
      if (incoming?.notxdetect === true || this.#state === 'muted') return new NoopTransaction(label, noopHeaders(incoming, true));
      if (this.#state === 'standby' || this.#closing !== null) return new NoopTransaction(label, noopHeaders(incoming, false));
      if (label.length === 0) {
        this.drop('invalid');
        return new NoopTransaction(label, noopHeaders(incoming, false));
      }
      return new ActiveTransaction(this, label, incoming?.traceId, incoming?.parentId);
    } catch {
      this.drop('internal');
      return new NoopTransaction('', {});
    }
  }

  transactionEnded(_tx: ActiveTransaction, pack: ProfilePack): void {
    let h = this.#txHandles.get(pack.name);
    if (h === undefined) {
      const tags = { tx: tagValue(pack.name) };
      h = { duration: this.histogram(TX_DURATION, tags), errors: this.counter(TX_ERRORS, tags) };
      if (this.#txHandles.size < 1000) this.#txHandles.set(pack.name, h);
    }
    h.duration.record(pack.durationMs);
    if (pack.error !== undefined) h.errors.add(1);
    if (this.#state === 'standby' || this.#state === 'muted') return;
    this.#bestEffort(() => encodeTrace(pack));
  }

  activeStack(tx: Transaction, frames: string[] | string): void {
    try {
      this.#activeStackUnsafe(tx, frames);
    } catch {
      this.drop('invalid');
    }
  }

  #activeStackUnsafe(tx: Transaction, frames: string[] | string): void {
    if (!(tx instanceof ActiveTransaction) || tx.isEnded) return;
    if (this.#state === 'standby' || this.#state === 'muted') return;
    const out = stackFrames(frames);
    if (out === null) return this.drop('invalid');
    this.#bestEffort(() => encodeActiveStack({ txid: tx.txid, name: tx.name, ts: Date.now(), elapsedMs: tx.elapsedMs, frames: out }));
  }

  // --- events, snapshots, registrations ------------------------------------

  event(e: EventInput): void {
    try {
      this.#eventUnsafe(e);
    } catch {
      this.drop('invalid');
    }
  }

  #eventUnsafe(e: EventInput): void {
    if (typeof e !== 'object' || e === null || typeof e.type !== 'string' || typeof e.message !== 'string') return this.drop('invalid');
    if (this.#state === 'muted') return this.drop('muted');
    const pack = eventPack(e);
    if (pack === null) return this.drop('invalid');
    this.#bestEffort(() => encodeEvent(pack));
  }

  snapshot(data: unknown, kind = 'app'): void {
    if (this.#state === 'muted') return this.drop('muted');
    if (data === undefined || typeof kind !== 'string') return this.drop('invalid');
    this.#bestEffort(() => snapshotFrame(Date.now(), kind.slice(0, 256), data));
  }

  /** Durable: kept until the sidecar has committed it, resent after reconnects. */
  registerBusinessTransaction(name: string): void {
    if (typeof name !== 'string' || name.length === 0 || name.length > 1024) return this.drop('invalid');
    if (this.#closing !== null) return this.drop('closed');
    // Muted: interceptors are unproductive, no new business transactions are registered.
    if (this.#state === 'muted') return this.drop('muted');
    if (this.#btNames.has(name)) return;
    if (this.#btNames.size >= MAX_BT_NAMES) return this.drop('bt_limit');
    this.#btNames.add(name);
    const seq = ++this.#seq;
    this.#out.enqueueDurable(seq, encodeBtRegistration({ seq, name, ts: Date.now() }), name);
  }

  // --- lifecycle ----------------------------------------------------------

  stats(): ShimStats {
    return {
      state: this.#state,
      sent: this.#out.sent,
      acked: this.#out.acked,
      buffered: this.#out.durable.size + this.#out.pending.size,
      bufferedBytes: this.#out.durable.bytes + this.#out.pending.bytes,
      dropped: { ...this.#dropped },
    };
  }

  /**
   * Send the metrics aggregated so far and wait until every durable frame is
   * acked by the sidecar. Resolves true when acked, false on timeout or after close.
   */
  flush(timeoutMs = 5000): Promise<boolean> {
    try {
      if (this.#closing !== null) return Promise.resolve(false);
      this.#flushMetrics();
      return this.#out.waitFor(this.#seq, Math.min(positive(timeoutMs, 5000), MAX_TIMER_MS));
    } catch {
      return Promise.resolve(false);
    }
  }

  /** Flush, write what can be written within closeTimeoutMs, and stop. Safe to call twice. */
  close(): Promise<void> {
    if (this.#closing !== null) return this.#closing;
    try {
      this.#flushMetrics();
    } catch {
      this.drop('internal');
    }
    if (this.#flushTimer !== null) clearInterval(this.#flushTimer);
    this.#flushTimer = null;
    this.#http?.stop();
    this.#out.settleWaiters();
    try {
      this.#closing = this.#conn.close(this.#closeTimeoutMs).catch(() => undefined);
    } catch {
      this.#closing = Promise.resolve();
    }
    return this.#closing;
  }

  // --- ConnectionHandler ----------------------------------------------------

  welcome(w: Welcome): void {
    this.#maxFrameBytes = w.settings.maxFrameBytes > 0 ? w.settings.maxFrameBytes : DEFAULT_MAX_FRAME_BYTES;
    // The sidecar's shim_buffer_bytes applies unless the app chose its own bound.
    if (!this.#explicitBufferBytes && w.settings.bufferBytes !== undefined && w.settings.bufferBytes > 0) this.#out.budget = w.settings.bufferBytes;
    if (this.#explicitFlushMs === undefined && w.settings.flushMs > 0 && w.settings.flushMs !== this.#flushMs) {
      this.#flushMs = Math.min(w.settings.flushMs, MAX_TIMER_MS);
      this.#startFlushTimer();
    }
    this.lastConnectError = null;
    // The sidecar already committed everything up to ackedSeq (the ack was lost with the connection).
    this.#out.ack(w.ackedSeq);
    this.#out.rewind();
    this.#setState(shimState(w.state), 'welcome');
    this.#out.pump();
  }

  stateChange(s: StateChange): void {
    this.#setState(shimState(s.state), s.cause);
  }

  ack(seq: number): void {
    this.#out.ack(seq);
  }

  sidecarError(e: ErrorMessage): void {
    this.lastSidecarError = e;
  }

  refused(e: ErrorMessage): void {
    // Published at every attempt: the state may already be 'disconnected' and not change.
    this.lastConnectError = e;
    if (refusedChannel.hasSubscribers) refusedChannel.publish(e);
  }

  lost(cause: string): void {
    this.#out.rewind();
    this.#setState('disconnected', cause);
  }

  drain(): void {
    this.#out.pump();
  }

  drop(reason: string, n = 1): void {
    this.#dropped[reason] = (this.#dropped[reason] ?? 0) + n;
    if (dropChannel.hasSubscribers) dropChannel.publish({ reason, n });
  }

  // --- internals ------------------------------------------------------------

  #setState(next: ShimState, cause: string): void {
    if (next === this.#state) return;
    const from = this.#state;
    this.#state = next;
    if (stateChannel.hasSubscribers) stateChannel.publish({ from, to: next, cause });
  }

  #startFlushTimer(): void {
    if (this.#flushTimer !== null) clearInterval(this.#flushTimer);
    this.#flushTimer = setInterval(() => this.#tick(), this.#flushMs);
    this.#flushTimer.unref();
  }

  #tick(): void {
    try {
      this.#flushMetrics();
      if (this.#out.sentSinceFlush === 0 && this.#conn.ready && !this.#conn.congested) this.#out.write(encodeHeartbeat(Date.now()));
      this.#out.sentSinceFlush = 0;
    } catch {
      this.drop('internal');
    }
  }

  /** Encode dirty handles into durable metrics frames of at most maxFrameBytes. */
  #flushMetrics(): void {
    const now = Date.now();
    const ts = this.#windowStart;
    this.#windowStart = now;
    // The wall clock may step back (NTP): a negative window would not encode.
    const windowMs = now > ts ? now - ts : 0;
    const dirty = this.#registry.takeDirty();
    if (dirty.length > 0) packPoints(dirty, this.#body, this.#maxFrameBytes - 64, (n, points) => this.#emitMetrics(ts, windowMs, n, points));
  }

  #emitMetrics(ts: number, windowMs: number, n: number, points: Buffer): void {
    const seq = ++this.#seq;
    writeMetricsHeader(this.#writer, seq, ts, windowMs, n);
    this.#writer.bytes(points);
    const frame = this.#writer.frame(MessageType.Metrics);
    if (frame.length - 4 > this.#maxFrameBytes) {
      // A single point larger than a frame cannot happen within the series limits; count it if it does.
      // Give the seq back: nothing was sent with it, and flush() waits for every seq to be acked.
      this.#seq--;
      this.drop('too_large', n);
      return;
    }
    this.#out.enqueueDurable(seq, frame);
  }

  #bestEffort(encode: () => Buffer): void {
    if (this.#closing !== null) return this.drop('closed');
    let frame: Buffer;
    try {
      frame = encode();
    } catch {
      return this.drop('invalid');
    }
    if (frame.length - 4 > this.#maxFrameBytes) return this.drop('too_large');
    this.#out.enqueue(frame);
  }
}
