import { type ApmError, type ControlResult, type Hello, type Series, type ShimToSidecar, encodeStateChange, encodeWelcome } from '@apm-sidecar/proto';
import { Aggregator } from './aggregator';
import { Counters } from './counters';
import { SeqTracker } from './dedup';
import { DOGSTATSD_INSTANCE, DogStatsdInput } from './dogstatsd-input';
import { DurableIngest } from './durable-ingest';
import { type IpcHandler, IpcServer } from './ipc-server';
import type { Logger } from './logger';
import { Outbox } from './outbox';
import type { Origin } from './pack';
import { recover } from './recovery';
import { RetentionHolder } from './retention/holder';
import { SpacePolicy } from './retention/space-policy';
import type { Synchronous } from './retention/store';
import { Sender } from './sender';
import type { PeerLimits, ShimIdentity, ShimSession } from './shim-session';
import { StateHolder } from './state';
import { SIDECAR_VERSION, SidecarStats, type SidecarStatus } from './stats';
import { DebugTransport } from './transport/debug';
import { TcpTransport, type TcpTransportOptions } from './transport/tcp';
import type { Transport } from './transport/transport';

export { SIDECAR_VERSION } from './stats';

export type UpstreamOptions = { kind: 'debug'; output: string } | ({ kind: 'tcp' } & Omit<TcpTransportOptions, 'apps' | 'agentId' | 'version'>);

export interface SidecarOptions {
  socketPath: string;
  socketGroup: string;
  upstream: UpstreamOptions;
  readyMaxAckAgeMs: number;
  agentId: string;
  flushMs: number;
  /** Pushed to shims: bytes they may hold while the sidecar is away. */
  shimBufferBytes: number;
  metricIntervalMs: number;
  queue1Size: number;
  queue2Size: number;
  maxFrameBytes: number;
  maxSeries: number;
  maxShims: number;
  /** Limits every IPC peer lives with (ipc_hello_timeout_ms, ipc_max_unread_bytes). */
  peerLimits: PeerLimits;
  shutdownTimeoutMs: number;
  /** Directory of the retention database. */
  dataDir: string;
  retentionMs: number;
  retentionSynchronous: Synchronous;
  /** Space bounds of the retention (DESIGN §8); beyond them the oldest retained metrics are dropped as `disk_full`. */
  retentionMaxBytes: number;
  retentionMinFreeBytes: number;
  eventReplayWindowMs: number;
  /** DogStatsD inputs (DESIGN §8): UDP host:port, and a Unix datagram socket path; null / '' = off. */
  dogstatsdUdp: { host: string; port: number } | null;
  dogstatsdSocket: string;
  log: Logger;
}

/**
 * The composition root: builds the parts, wires them and drives them (start, the tick, stop).
 *
 *   IpcServer ─ durable ─> DurableIngest ─> retention ─> Aggregator ─> Outbox.queue1 ┐
 *             └ others ──> Outbox (keep policy by state) ───────────────────────────┴─> Sender ─> Transport
 *   DogStatsdInput ─ metrics ─> Aggregator; events ─> Outbox   Link (in the transport) ─> StateHolder ─> IpcServer, Outbox
 *
 * The state flows one way: the transport's Link writes it, the IPC server (to the shims) and
 * the Outbox subscribe. SidecarStats is what status and /metrics read.
 */
export class Sidecar implements IpcHandler {
  readonly state: StateHolder;
  readonly stats: SidecarStats;
  private readonly log: Logger;
  private readonly counters = new Counters();
  private readonly seqs = new SeqTracker();
  private readonly seriesCache = new Map<string, Series>();
  private readonly ipc: IpcServer;
  private readonly retention: RetentionHolder;
  private readonly space: SpacePolicy;
  private readonly aggregator: Aggregator;
  private readonly outbox: Outbox;
  private readonly ingest: DurableIngest;
  private readonly dogstatsd: DogStatsdInput;
  private readonly transport: Transport;
  private readonly sender: Sender;
  private tickTimer: NodeJS.Timeout | null = null;
  private lastUpkeep = 0;
  /** start() completed: only then may stop() emit open intervals into the retention. */
  private started = false;
  private stopping: Promise<void> | null = null;
  private readonly errorLogAt = new Map<string, number>();

  constructor(private readonly opts: SidecarOptions) {
    const { log } = opts;
    const counters = this.counters;
    this.log = log;
    this.state = new StateHolder(log);
    const knownBt = new Set<string>();
    this.ipc = new IpcServer({ ...opts, seriesCache: this.seriesCache, counters }, this);
    this.ipc.bindings.reserve(DOGSTATSD_INSTANCE);
    this.retention = new RetentionHolder({
      dataDir: opts.dataDir,
      synchronous: opts.retentionSynchronous,
      log,
      counters,
      opened: (store) =>
        recover(store, {
          seqs: this.seqs,
          bindings: this.ipc.bindings,
          aggregator: this.aggregator,
          seriesCache: this.seriesCache,
          queue1: this.outbox.queue1,
          knownBt,
          synchronous: opts.retentionSynchronous,
          log,
        }),
    });
    const wake = (): void => this.sender.step();
    this.outbox = new Outbox({ ...opts, retention: this.retention, counters, log, wake });
    this.aggregator = new Aggregator(opts.metricIntervalMs, Math.max(2 * opts.flushMs, 500), opts.maxSeries, (start, points, frames) =>
      this.outbox.emitMetrics(start, points, frames),
    );
    const up = opts.upstream;
    this.transport =
      up.kind === 'debug'
        ? new DebugTransport(opts.agentId, up.output)
        : new TcpTransport({ ...up, agentId: opts.agentId, version: SIDECAR_VERSION, apps: () => this.ipc.apps() });
    this.sender = new Sender([this.outbox.queue1, this.outbox.queue2], this.transport, (pack) => this.outbox.sent(pack));
    this.outbox.queue1.isSending = (id) => this.sender.isSending(id);
    const parts = { seqs: this.seqs, retention: this.retention, aggregator: this.aggregator, counters, log };
    this.ingest = new DurableIngest({ ...parts, queue1: this.outbox.queue1, knownBt, wake });
    this.dogstatsd = new DogStatsdInput({
      ...parts,
      udp: opts.dogstatsdUdp,
      socketPath: opts.dogstatsdSocket,
      flushMs: opts.flushMs,
      maxSeries: opts.maxSeries,
      onEvent: (event) => {
        counters.received.events++;
        this.outbox.keep({ kind: 'event', origin: DOGSTATSD_ORIGIN, event }, this.state.state);
        this.sender.step();
      },
    });
    this.space = new SpacePolicy({
      dataDir: opts.dataDir,
      maxBytes: opts.retentionMaxBytes,
      minFreeBytes: opts.retentionMinFreeBytes,
      log,
      isSending: (id) => this.sender.isSending(id),
      dropped: (ids, points) => this.outbox.dropForSpace(ids, points),
    });
    this.stats = new SidecarStats(counters, {
      ...opts,
      state: this.state,
      transport: this.transport,
      outbox: this.outbox,
      retention: this.retention,
      space: this.space,
      dogstatsd: this.dogstatsd,
      aggregator: this.aggregator,
      ipc: this.ipc,
    });
    this.state.onChange((to, cause, from) => {
      this.ipc.broadcast(encodeStateChange({ state: to, cause }));
      this.outbox.stateChanged(to, from);
    });
  }

  get socketPath(): string {
    return this.opts.socketPath;
  }

  async start(): Promise<void> {
    // Nothing is touched before both checks pass: a live socket first, then the data_dir lock.
    // Only then is the retention opened (a second sidecar must not seal the first one's frames).
    await this.ipc.refuseLiveSocket();
    this.retention.open(true);
    await this.ipc.listen();
    await this.dogstatsd.start();
    this.transport.start({ wake: this.sender.step, state: this.state, log: this.log });
    const tickMs = Math.max(50, Math.min(1000, Math.floor(this.opts.metricIntervalMs / 4)));
    this.tickTimer = setInterval(() => this.tick(), tickMs);
    this.started = true;
    this.log.info({ socket: this.opts.socketPath, transport: this.transport.name, agentId: this.opts.agentId }, 'listening for shims');
  }

  /** Stop accepting, emit open intervals, send what can be sent before the deadline. Safe to call twice. */
  stop(): Promise<void> {
    if (this.stopping !== null) return this.stopping;
    this.stopping = (async () => {
      if (this.tickTimer !== null) clearInterval(this.tickTimer);
      // A start that failed emits nothing: what the retention holds stays as it was.
      this.dogstatsd.stop(this.started);
      this.ipc.stopAccepting(this.started);
      if (!this.started) {
        await this.transport.close();
        this.retention.close();
        return;
      }
      const deadline = Date.now() + this.opts.shutdownTimeoutMs;
      const { queue1, queue2 } = this.outbox;
      // Open intervals become packs now: sent if the upstream allows, else kept in the retention.
      this.aggregator.tick(Date.now(), true);
      this.sender.step();
      while ((queue1.depth > 0 || queue2.depth > 0 || this.sender.pending > 0) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 10));
        this.sender.step();
      }
      const left = queue1.depth + queue2.depth;
      if (left > 0) this.log.warn({ queue1: queue1.depth, queue2: queue2.depth }, `shutdown deadline reached with ${left} packs unsent`);
      this.ipc.destroyAll();
      await this.transport.close();
      this.retention.close();
      this.ipc.removeSocketFile();
      this.log.info({ sent: this.counters.sent }, 'stopped');
    })();
    return this.stopping;
  }

  /**
   * Ready: the IPC socket is listening, the sidecar is not shutting down, and the transport is
   * ready (debug: always; tcp/http: a session is active and, when frames are unacked, the last
   * ack is at most ready_max_ack_age_ms old).
   */
  readiness(): { ready: boolean; reason: string } {
    if (!this.ipc.listening) return { ready: false, reason: 'IPC socket not listening yet' };
    if (this.stopping !== null) return { ready: false, reason: 'shutting down' };
    const up = this.transport.readiness(this.opts.readyMaxAckAgeMs);
    return { ready: up.ready, reason: `listening on ${this.opts.socketPath}; ${up.reason}` };
  }

  // --- IpcHandler -----------------------------------------------------------

  welcome(hello: Hello): Buffer {
    return encodeWelcome({
      state: this.state.state,
      settings: { flushMs: this.opts.flushMs, maxFrameBytes: this.opts.maxFrameBytes, bufferBytes: this.opts.shimBufferBytes },
      ackedSeq: this.seqs.last(hello.instanceId),
      agentId: this.opts.agentId,
      sidecarVersion: SIDECAR_VERSION,
    });
  }

  message(session: ShimSession, msg: ShimToSidecar, payload: Buffer): void {
    const hello = session.hello as ShimIdentity;
    const received = this.counters.received;
    const state = this.state.state;
    switch (msg.type) {
      case 'Metrics':
        this.ingest.metrics(session, hello.instanceId, msg.body, payload);
        return;
      case 'BtRegistration':
        this.ingest.btRegistration(session, originOf(hello), msg.body);
        return;
      case 'Trace':
        received.traces++;
        this.outbox.keep({ kind: 'trace', origin: originOf(hello), trace: msg.body }, state);
        break;
      case 'ActiveStack':
        received.activeStacks++;
        this.outbox.keep({ kind: 'activeStack', origin: originOf(hello), stack: msg.body }, state);
        break;
      case 'Event':
        received.events++;
        this.outbox.keep({ kind: 'event', origin: originOf(hello), event: msg.body }, state);
        break;
      case 'Snapshot':
        received.snapshots++;
        this.outbox.keep({ kind: 'snapshot', origin: originOf(hello), snapshot: msg.body }, state);
        break;
      case 'Heartbeat':
      case 'Hello':
        return;
    }
    this.sender.step();
  }

  status(): SidecarStatus {
    return this.stats.snapshot();
  }

  control(command: string): Promise<ControlResult> {
    if (command === 'reconnect') return Promise.resolve(this.transport.reconnect());
    return Promise.resolve({ ok: false, message: `unknown command "${command}"` });
  }

  bound(instanceId: string, secretHash: Buffer): void {
    // A failed write is counted by the store (retentionErrors); the binding holds in memory
    // and is written again at this instance's first Hello after a restart.
    this.retention.store?.addInstance(instanceId, secretHash, () => {});
  }

  newApp(): void {
    this.transport.appsChanged?.();
  }

  // --- internals ------------------------------------------------------------

  private tick(): void {
    // The tick drives aggregation, the retention's upkeep and the sender: nothing it calls may
    // take the process down (a full disk, an I/O error): it is logged and the next tick tries again.
    try {
      const now = Date.now();
      this.aggregator.tick(now);
      if (now - this.lastUpkeep >= 1000) {
        this.lastUpkeep = now;
        this.outbox.purge(now);
        const store = this.retention.upkeep();
        if (store !== null) this.space.enforce(store, now);
      } else if (this.space.near && this.retention.store !== null) {
        // Near a space bound: measure on every tick, so a burst cannot cross it unseen.
        this.space.enforce(this.retention.store, now);
      }
      // Keep the series cache bounded: it only saves re-parsing, so dropping it is safe.
      if (this.seriesCache.size > this.opts.maxSeries * 2) this.seriesCache.clear();
      this.sender.step();
    } catch (err) {
      this.internalError('tick', err);
    }
  }

  private internalError(where: string, err: unknown): void {
    const now = Date.now();
    if (now - (this.errorLogAt.get(where) ?? 0) < 10_000) return;
    this.errorLogAt.set(where, now);
    this.log.error({ where, err: (err as Error).message, code: (err as ApmError).code }, `${where} failed: ${(err as Error).message}`);
  }
}

/** Events and service checks that came in over DogStatsD: no shim, no pid. */
const DOGSTATSD_ORIGIN: Origin = { app: 'dogstatsd', instanceId: DOGSTATSD_INSTANCE, pid: 0 };

function originOf(h: ShimIdentity): Origin {
  return { app: h.app, instanceId: h.instanceId, pid: h.pid };
}
