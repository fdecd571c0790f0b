import { lstatSync, unlinkSync } from 'node:fs';
import { type Server, type Socket, createServer } from 'node:net';
import {
  type ApmError,
  TooManyConnectionsError,
  type ControlResult,
  type Hello,
  InstanceSecretError,
  type Series,
  type ShimToSidecar,
  type SidecarState,
  decodeMetrics,
  encodeMetrics,
  encodeStateChange,
  encodeWelcome,
} from '@apm-sidecar/proto';
import { decodeMetricPack, encodeMetricPack } from '@apm-sidecar/proto/upstream';
import { type AggPoint, Aggregator } from './aggregator';
import { SeqTracker } from './dedup';
import { InstanceBindings } from './instance-binding';
import { DogStatsdAggregator } from './dogstatsd';
import { type DogStatsdListeners, listenDogStatsd } from './dogstatsd-listeners';
import { EventRing } from './event-ring';
import { Queue1 } from './queue1';
import { DataDirLock, DataDirLockError } from './data-dir-lock';
import { filesystemFreeBytes, lowWater, spaceVerdict } from './retention/space';
import {
  RetentionError,
  RetentionStore,
  isPassingStorageError,
  type SpaceUsage,
  type StorageCondition,
  type StoredFrame,
  type StoredPack,
  type Synchronous,
} from './retention/store';
import type { Logger } from './logger';
import { COUNTER_OF, type Origin, type Pack } from './pack';
import { BoundedQueue } from './queue';
import { Sender } from './sender';
import { type PeerLimits, ShimSession, type SessionHost, type ShimIdentity } from './shim-session';
import { SocketPathError, claimSocketPath, describeTightening, listenPrivately, prepareSocketDir, probeSocket } from './socket-path';
import { requestStatus } from './status-client';
import { StateHolder } from './state';
import { dropsQueue2, keepPolicy } from './link/keep-policy';
import { DebugTransport } from './transport/debug';
import { TcpTransport, type TcpTransportOptions } from './transport/tcp';
import type { Transport } from './transport/transport';

export const SIDECAR_VERSION = '0.1.0';

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

/** The pseudo shim instance DogStatsD input is retained and de-duplicated under. */
const DOGSTATSD_INSTANCE = 'dogstatsd';

type CounterName = 'metrics' | 'traces' | 'activeStacks' | 'events' | 'snapshots' | 'btRegistrations';
const counterSet = (): Record<CounterName, number> => ({ metrics: 0, traces: 0, activeStacks: 0, events: 0, snapshots: 0, btRegistrations: 0 });

/** The composition root: IPC server, sessions, aggregation, queues, sender and transport. */
export class Sidecar implements SessionHost {
  readonly maxFrameBytes: number;
  readonly seriesCache = new Map<string, Series>();
  readonly peerLimits: PeerLimits;
  readonly state: StateHolder;
  private readonly log: Logger;
  private readonly server: Server;
  private readonly sessions = new Set<ShimSession>();
  private readonly seqs = new SeqTracker();
  /** The session that speaks for each instance now (at most one). */
  private readonly liveInstances = new Map<string, ShimSession>();
  private readonly bindings = new InstanceBindings((id) => this.liveInstances.has(id));
  private readonly aggregator: Aggregator;
  readonly queue1: Queue1;
  readonly queue2: BoundedQueue<Pack>;
  private readonly ring: EventRing;
  private retention: RetentionStore | null = null;
  /** Why the retention is not open (null when it is); retried every second. */
  private retentionClosedWhy: string | null = null;
  private lock: DataDirLock | null = null;
  /** start() completed: only then may stop() emit open intervals into the retention. */
  private started = false;
  /** Last space measurement (every second), for status and /metrics. */
  private space: { usage: SpaceUsage | null; freeBytes: number | null; overLimit: 'max_bytes' | 'min_free' | null; droppedInEpisode: number } = {
    usage: null,
    freeBytes: null,
    overLimit: null,
    droppedInEpisode: 0,
  };
  /** Registrations already persisted (de-duplication by name). */
  private knownBt = new Set<string>();
  private readonly transport: Transport;
  private readonly sender: Sender;
  private tickTimer: NodeJS.Timeout | null = null;
  private packSeq = 0;
  private readonly bootId = `${Date.now().toString(36)}${process.pid.toString(36)}`;
  private readonly startedAt = Date.now();
  private stopping: Promise<void> | null = null;
  private listening = false;
  readonly counters = {
    received: counterSet(),
    sent: counterSet(),
    dropped: {} as Record<string, number>,
    ipcErrors: {} as Record<string, number>,
    duplicates: 0,
    connections: 0,
    /** Failed retention commits and maintenance transactions. */
    retentionErrors: 0,
    /** Durable frames not committed, so not acked: the shim was told to resend them later. */
    retentionRefused: 0,
  };
  private lastPurge = 0;
  private dogstatsd: DogStatsdAggregator | null = null;
  private dogstatsdListeners: DogStatsdListeners | null = null;
  private dogstatsdTimer: NodeJS.Timeout | null = null;
  private dogstatsdSeq = 0;
  private readonly errorLogAt = new Map<string, number>();

  constructor(private readonly opts: SidecarOptions) {
    this.log = opts.log;
    this.maxFrameBytes = opts.maxFrameBytes;
    this.peerLimits = opts.peerLimits;
    this.bindings.reserve(DOGSTATSD_INSTANCE);
    this.state = new StateHolder(opts.log);
    const dropEpisode = (q: BoundedQueue<Pack>, phase: 'start' | 'end', total: number) => {
      if (phase === 'start') this.log.warn({ queue: q.name, capacity: q.capacity }, `${q.name} is full: dropping the oldest packs`);
      else this.log.warn({ queue: q.name, dropped: total }, `${q.name} has room again after dropping ${total} packs`);
    };
    this.queue1 = new Queue1(
      opts.queue1Size,
      (pack, reason) => this.drop(reason, pack.kind === 'metrics' ? pack.points : 1),
      (phase, total) => dropEpisode({ name: 'queue1', capacity: opts.queue1Size } as BoundedQueue<Pack>, phase, total),
    );
    this.queue2 = new BoundedQueue<Pack>('queue2', opts.queue2Size, dropEpisode);
    this.ring = new EventRing(opts.eventReplayWindowMs, 10_000, (n, reason) => this.drop(reason, n));
    this.aggregator = new Aggregator(opts.metricIntervalMs, Math.max(2 * opts.flushMs, 500), opts.maxSeries, (start, points) =>
      this.emitMetrics(start, points),
    );
    const up = opts.upstream;
    this.transport =
      up.kind === 'debug'
        ? new DebugTransport(opts.agentId, up.output)
        : new TcpTransport({ ...up, agentId: opts.agentId, version: SIDECAR_VERSION, apps: () => this.apps() });
    this.sender = new Sender([this.queue1, this.queue2], this.transport, (pack) => this.sent(pack));
    this.server = createServer((socket) => this.accept(socket));
    this.state.onChange((to, cause, from) => this.stateChanged(to, cause, from));
  }

  get socketPath(): string {
    return this.opts.socketPath;
  }

  async start(): Promise<void> {
    // Nothing is touched before both checks pass: a live socket first, then the data_dir lock.
    // Only then is the retention opened (a second sidecar must not seal the first one's frames).
    await this.refuseLiveSocket();
    this.openRetention(true);
    const { gid, tightened } = prepareSocketDir(this.opts.socketPath, this.opts.socketGroup);
    if (tightened !== null) this.log.warn({ dir: tightened.dir }, describeTightening(tightened));
    const replaced = await claimSocketPath(this.opts.socketPath);
    if (replaced) this.log.warn({ socket: this.opts.socketPath }, 'replaced a stale socket file (nothing was listening)');
    try {
      await listenPrivately(this.server, this.opts.socketPath, gid);
    } finally {
      // Bound (even if setting its mode failed): stop() closes it and removes the file.
      this.listening = this.server.listening;
    }
    this.server.on('error', (err) => this.log.error({ err }, 'IPC server error'));
    if (this.opts.dogstatsdUdp !== null || this.opts.dogstatsdSocket.length > 0) {
      const agg = new DogStatsdAggregator();
      this.dogstatsd = agg;
      this.dogstatsdSeq = this.seqs.last(DOGSTATSD_INSTANCE);
      this.dogstatsdListeners = await listenDogStatsd({
        udp: this.opts.dogstatsdUdp,
        socketPath: this.opts.dogstatsdSocket,
        onPacket: (b) => agg.packet(b),
        log: this.log,
      });
      this.dogstatsdTimer = setInterval(() => this.flushDogStatsd(), this.opts.flushMs);
    }
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
      if (!this.started) {
        // A start that failed emits nothing: what the retention holds stays as it was.
        if (this.tickTimer !== null) clearInterval(this.tickTimer);
        if (this.dogstatsdTimer !== null) clearInterval(this.dogstatsdTimer);
        this.dogstatsdListeners?.close();
        if (this.listening) this.server.close();
        await this.transport.close();
        this.retention?.close();
        this.lock?.release();
        return;
      }
      const deadline = Date.now() + this.opts.shutdownTimeoutMs;
      if (this.tickTimer !== null) clearInterval(this.tickTimer);
      if (this.dogstatsdTimer !== null) clearInterval(this.dogstatsdTimer);
      this.dogstatsdListeners?.close();
      this.flushDogStatsd();
      if (this.listening) this.server.close();
      for (const s of this.sessions) s.socket.end();
      // Open intervals become packs now: sent if the upstream allows, else kept in the retention.
      this.aggregator.tick(Date.now(), true);
      this.sender.step();
      while ((this.queue1.depth > 0 || this.queue2.depth > 0 || this.sender.pending > 0) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 10));
        this.sender.step();
      }
      const left = this.queue1.depth + this.queue2.depth;
      if (left > 0) this.log.warn({ queue1: this.queue1.depth, queue2: this.queue2.depth }, `shutdown deadline reached with ${left} packs unsent`);
      for (const s of this.sessions) s.socket.destroy();
      await this.transport.close();
      this.retention?.close();
      this.lock?.release();
      if (this.listening) {
        try {
          unlinkSync(this.opts.socketPath);
        } catch {
          // already gone
        }
      }
      this.log.info({ sent: this.counters.sent }, 'stopped');
    })();
    return this.stopping;
  }

  get shimCount(): number {
    let n = 0;
    for (const s of this.sessions) if (s.isShim) n++;
    return n;
  }

  aggregationStats(): ReturnType<Aggregator['stats']> {
    return this.aggregator.stats();
  }

  /**
   * Ready: the IPC socket is listening, the sidecar is not shutting down, and the transport is
   * ready (debug: always; tcp/http: a session is active and, when frames are unacked, the last
   * ack is at most ready_max_ack_age_ms old).
   */
  readiness(): { ready: boolean; reason: string } {
    if (!this.listening) return { ready: false, reason: 'IPC socket not listening yet' };
    if (this.stopping !== null) return { ready: false, reason: 'shutting down' };
    const up = this.transport.readiness(this.opts.readyMaxAckAgeMs);
    return { ready: up.ready, reason: `listening on ${this.opts.socketPath}; ${up.reason}` };
  }

  // --- SessionHost ----------------------------------------------------------

  hello(session: ShimSession, hello: Hello): Buffer {
    this.bindInstance(session, hello);
    // A new app behind this sidecar: tell the collector (the session is already listed, so look at the others).
    let known = false;
    for (const s of this.sessions) if (s !== session && s.hello?.app === hello.app) known = true;
    if (!known) setImmediate(() => this.transport.appsChanged?.());
    this.log.info({ session: session.id, app: hello.app, appPid: hello.pid, instanceId: hello.instanceId, shimVersion: hello.shimVersion }, 'shim connected');
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
    switch (msg.type) {
      case 'Metrics': {
        const m = msg.body;
        if (!this.seqs.isNew(hello.instanceId, m.seq)) {
          this.counters.duplicates++;
          session.ack(this.seqs.last(hello.instanceId));
          return;
        }
        const frame: StoredFrame = { instanceId: hello.instanceId, seq: m.seq, intervalStart: this.aggregator.intervalOf(m.ts), payload: Buffer.from(payload) };
        this.commitDurable(
          session,
          m.seq,
          (store, done) => store.addFrame(frame, done),
          () => {
            this.counters.received.metrics += m.points.length;
            const overflowBefore = this.aggregator.droppedOverflow;
            const dropped = this.aggregator.add(m);
            if (dropped > 0) this.drop('series_limit', dropped);
            if (this.aggregator.droppedOverflow > overflowBefore) this.drop('overflow', this.aggregator.droppedOverflow - overflowBefore);
          },
        );
        return;
      }
      case 'BtRegistration': {
        const b = msg.body;
        if (!this.seqs.isNew(hello.instanceId, b.seq)) {
          this.counters.duplicates++;
          session.ack(this.seqs.last(hello.instanceId));
          return;
        }
        const o = origin(hello);
        this.commitDurable(
          session,
          b.seq,
          (store, done) => store.addBt({ name: b.name, ts: b.ts, app: o.app, instanceId: o.instanceId, pid: o.pid }, b.seq, done),
          () => {
            if (this.knownBt.has(b.name)) return;
            this.knownBt.add(b.name);
            this.counters.received.btRegistrations++;
            this.queue1.push({ kind: 'btRegistration', origin: o, name: b.name, ts: b.ts });
            this.sender.step();
          },
        );
        return;
      }
      case 'Trace':
        this.counters.received.traces++;
        this.keepByState({ kind: 'trace', origin: origin(hello), trace: msg.body });
        break;
      case 'ActiveStack':
        this.counters.received.activeStacks++;
        this.keepByState({ kind: 'activeStack', origin: origin(hello), stack: msg.body });
        break;
      case 'Event':
        this.counters.received.events++;
        this.keepByState({ kind: 'event', origin: origin(hello), event: msg.body });
        break;
      case 'Snapshot':
        this.counters.received.snapshots++;
        this.keepByState({ kind: 'snapshot', origin: origin(hello), snapshot: msg.body });
        break;
      case 'Heartbeat':
        return;
      case 'Hello':
        return;
    }
    this.sender.step();
  }

  /**
   * A durable frame (DESIGN §3): written to the retention first; only once the commit succeeded
   * is it applied (aggregated, queued) and acked. When the commit fails, or there is no open
   * retention, nothing is applied and the connection is closed with ERR_RETENTION_UNAVAILABLE:
   * the shim keeps the frame and every later one (acks are cumulative, so none may be acked past
   * a hole) and resends them after it reconnects.
   */
  private commitDurable(session: ShimSession, seq: number, write: (store: RetentionStore, done: (err: Error | null) => void) => void, apply: () => void): void {
    const store = this.retention;
    if (store === null) {
      this.refuse(session, this.retentionClosedWhy ?? 'the retention is closed');
      return;
    }
    write(store, (err) => {
      if (err !== null) {
        this.refuse(session, err.message);
        return;
      }
      const instanceId = (session.hello as Hello).instanceId;
      // A copy of this seq may have been committed meanwhile (a resend on a new connection): apply it once.
      if (this.seqs.isNew(instanceId, seq)) {
        this.seqs.commit(instanceId, seq);
        apply();
      } else this.counters.duplicates++;
      session.ack(seq);
    });
  }

  private refuse(session: ShimSession, why: string): void {
    this.counters.retentionRefused++;
    session.fail(new RetentionError('ERR_RETENTION_UNAVAILABLE', `durable frame not committed (${why}); resend it later`));
  }

  /** Traces, active stacks, events and snapshots go where the keep policy says for the state (DESIGN §6). */
  private keepByState(pack: Pack): void {
    const keep = keepPolicy(pack.kind, this.state.state);
    if (keep === 'queue2') this.enqueue(this.queue2, pack);
    else if (keep === 'queue1') this.queue1.push(pack);
    else if (keep === 'ring') this.ring.push(pack, Date.now());
    else this.drop(keep.drop);
  }

  status(): unknown {
    const agg = this.aggregator.stats();
    const q = (x: { depth: number; capacity: number; dropped: number }) => ({ depth: x.depth, capacity: x.capacity, dropped: x.dropped });
    return {
      state: this.state.state,
      stateSince: new Date(this.state.since).toISOString(),
      stateCause: this.state.cause,
      agentId: this.opts.agentId,
      version: SIDECAR_VERSION,
      pid: process.pid,
      uptimeMs: Date.now() - this.startedAt,
      socket: this.opts.socketPath,
      transport: this.transport.name,
      upstream: this.transport.status(),
      queues: { queue1: q(this.queue1), queue2: q(this.queue2) },
      retention: {
        ...(this.retention?.stats(Date.now()) ?? { rows: 0, oldestAgeMs: 0 }),
        path: this.retention?.path ?? null,
        retentionMs: this.opts.retentionMs,
        synchronous: this.opts.retentionSynchronous,
        ...this.retentionCondition(),
        usedBytes: this.space.usage?.usedBytes ?? null,
        fileBytes: this.space.usage?.fileBytes ?? null,
        freeBytes: this.space.freeBytes,
        maxBytes: this.opts.retentionMaxBytes,
        minFreeBytes: this.opts.retentionMinFreeBytes,
      },
      eventRing: { size: this.ring.size, windowMs: this.opts.eventReplayWindowMs },
      dogstatsd:
        this.dogstatsd === null
          ? null
          : { ...this.dogstatsd.counts, udpPort: this.dogstatsdListeners?.udpPort ?? null, socket: this.opts.dogstatsdSocket || null },
      aggregation: {
        intervalMs: this.opts.metricIntervalMs,
        openIntervals: agg.intervals,
        points: agg.points,
        oldestAgeMs: agg.oldestIntervalStart === null ? 0 : Date.now() - agg.oldestIntervalStart,
        series: this.seriesCache.size,
      },
      counters: this.counters,
      shims: [...this.sessions]
        .filter((s) => s.isShim)
        .map((s) => {
          const h = s.hello as ShimIdentity;
          return {
            session: s.id,
            app: h.app,
            pid: h.pid,
            // A prefix tells people which shim this is; the full id is not handed to every socket client.
            instance: h.instanceId.slice(0, 8),
            shimVersion: h.shimVersion,
            connectedAt: new Date(s.connectedAt).toISOString(),
            lastSeenAt: new Date(s.lastSeenAt).toISOString(),
            frames: s.frames,
            bytes: s.bytes,
            ackedSeq: s.ackedSeq,
          };
        }),
    };
  }

  control(command: string): Promise<ControlResult> {
    if (command === 'reconnect') return Promise.resolve(this.transport.reconnect());
    return Promise.resolve({ ok: false, message: `unknown command "${command}"` });
  }

  protocolError(session: ShimSession, err: ApmError): void {
    // Not the peer's fault: counted as retentionRefused and reported by the retention condition.
    if (err.code === 'ERR_RETENTION_UNAVAILABLE') return;
    this.counters.ipcErrors[err.code] = (this.counters.ipcErrors[err.code] ?? 0) + 1;
    // Count every one, log each code at most every 10 s: a broken client cannot flood the log.
    const now = Date.now();
    const last = this.errorLogAt.get(err.code) ?? 0;
    if (now - last >= 10_000) {
      this.errorLogAt.set(err.code, now);
      this.log.warn(
        { session: session.id, code: err.code, app: session.hello?.app, appPid: session.hello?.pid, total: this.counters.ipcErrors[err.code] },
        `closing IPC connection: ${err.message}`,
      );
    }
  }

  closed(session: ShimSession): void {
    if (session.hello !== null && this.liveInstances.get(session.hello.instanceId) === session) this.liveInstances.delete(session.hello.instanceId);
    if (!this.sessions.delete(session)) return;
    if (session.isShim) this.log.info({ session: session.id, app: session.hello?.app, appPid: session.hello?.pid }, 'shim disconnected');
  }

  /** Apps of the shims connected now. */
  apps(): string[] {
    const out = new Set<string>();
    for (const s of this.sessions) if (s.hello !== null) out.add(s.hello.app);
    return [...out];
  }

  // --- internals ------------------------------------------------------------

  /**
   * An instance id belongs to the shim whose secret it was first seen with
   * (kept as a hash, in the retention too). Another secret is refused; the
   * same secret on a new connection is that shim reconnecting before its old
   * connection was seen to close, which is then closed.
   */
  private bindInstance(session: ShimSession, hello: Hello): void {
    const hash = InstanceBindings.hash(hello.secret);
    const check = this.bindings.check(hello.instanceId, hash);
    if (check === 'mismatch') throw new InstanceSecretError();
    const previous = this.liveInstances.get(hello.instanceId);
    if (previous !== undefined && previous !== session) {
      this.log.info({ session: previous.id, by: session.id, app: hello.app }, 'shim reconnected: closing its previous connection');
      previous.socket.destroy();
    }
    this.liveInstances.set(hello.instanceId, session);
    this.bindings.bind(hello.instanceId, hash);
    if (check === 'new') {
      // A failed write is counted by the store (retentionErrors); the binding holds in memory
      // and is written again at this instance's first Hello after a restart.
      this.retention?.addInstance(hello.instanceId, hash, () => {});
    }
  }

  private accept(socket: Socket): void {
    this.counters.connections++;
    if (this.stopping !== null) {
      socket.destroy();
      return;
    }
    const session = new ShimSession(socket, this);
    if (this.sessions.size >= this.opts.maxShims) {
      session.fail(new TooManyConnectionsError(this.opts.maxShims));
      return;
    }
    this.sessions.add(session);
  }

  private tick(): void {
    // The tick drives aggregation, the retention's upkeep and the sender: nothing it calls may
    // take the process down (a full disk, an I/O error): it is logged and the next tick tries again.
    try {
      const now = Date.now();
      this.aggregator.tick(now);
      if (now - this.lastPurge >= 1000) {
        this.lastPurge = now;
        this.purge(now);
        this.upkeepRetention();
      }
      // Keep the series cache bounded: it only saves re-parsing, so dropping it is safe.
      if (this.seriesCache.size > this.opts.maxSeries * 2) this.seriesCache.clear();
      this.sender.step();
    } catch (err) {
      this.internalError('tick', err);
    }
  }

  /** Metrics older than retention_ms are dropped (memory and SQLite) and counted `expired`. */
  private purge(now: number): void {
    const cutoff = now - this.opts.retentionMs;
    let points = 0;
    for (const p of this.queue1.expireMetrics(cutoff)) if (p.kind === 'metrics') points += p.points;
    // On failure the rows stay and the next purge drops them; the condition is already reported.
    this.retention?.purge(cutoff, now - 7 * 24 * 3600 * 1000);
    if (points > 0) {
      this.drop('expired', points);
      this.log.warn({ points, retentionMs: this.opts.retentionMs }, `dropped ${points} metric points older than retention_ms`);
    }
    this.ring.expire(now);
  }

  /** Every second: open the retention if it is not, check it still writes when it failed, keep it within its space bounds. */
  private upkeepRetention(): void {
    if (this.retention === null) this.openRetention();
    const store = this.retention;
    if (store === null) return;
    if (store.condition.failing) store.probe();
    const usage = store.usage();
    const freeBytes = filesystemFreeBytes(this.opts.dataDir);
    this.space.usage = usage;
    this.space.freeBytes = freeBytes;
    if (usage === null) return;
    const limits = { maxBytes: this.opts.retentionMaxBytes, minFreeBytes: this.opts.retentionMinFreeBytes };
    const high = spaceVerdict(usage, freeBytes, limits);
    const low = spaceVerdict(usage, freeBytes, lowWater(limits));
    if (high.reason === null) {
      if (this.space.overLimit !== null && low.reason === null) {
        this.log.warn(
          { dropped: this.space.droppedInEpisode, usedBytes: usage.usedBytes, freeBytes },
          `retention within its space bounds again after dropping ${this.space.droppedInEpisode} metric points (disk_full)`,
        );
        this.space.overLimit = null;
        this.space.droppedInEpisode = 0;
      }
      return;
    }
    if (this.space.overLimit === null) {
      this.log.warn(
        { reason: high.reason, usedBytes: usage.usedBytes, freeBytes, maxBytes: limits.maxBytes, minFreeBytes: limits.minFreeBytes },
        `retention beyond its space bounds (${high.reason}): dropping the oldest retained metrics (disk_full)`,
      );
    }
    this.space.overLimit = high.reason;
    // Pack bodies understate the pages they take: drop, measure again, until below the low-water
    // mark. Each round also empties the WAL into the pages just freed, so the filesystem gets back
    // what the WAL held.
    let excess = low.excessBytes;
    for (let i = 0; i < 64 && excess > 0; i++) {
      const r = store.dropOldest(excess, (id) => this.sender.isSending(id));
      if (r === null) return;
      if (r.packIds.length > 0) {
        const ids = new Set(r.packIds);
        this.queue1.removeMetricPacks((p) => ids.has(p.packId));
        this.drop('disk_full', r.points);
        this.space.droppedInEpisode += r.points;
      }
      if (high.reason === 'min_free') store.checkpoint();
      const after = store.usage();
      if (after === null) return;
      const free = filesystemFreeBytes(this.opts.dataDir);
      this.space.usage = after;
      this.space.freeBytes = free;
      excess = spaceVerdict(after, free, lowWater(limits)).excessBytes;
      if (r.packIds.length === 0) return; // nothing left to drop: open intervals' frames are kept
    }
  }

  private retentionCondition(): { condition: 'ok' | 'failing' | 'unavailable' | 'full'; conditionSince: string | null; lastError: string | null } {
    const store = this.retention;
    if (store === null) return { condition: 'unavailable', conditionSince: null, lastError: this.retentionClosedWhy };
    const c = store.condition;
    if (c.failing) return { condition: 'failing', conditionSince: new Date(c.since).toISOString(), lastError: c.lastError };
    return { condition: this.space.overLimit === null ? 'ok' : 'full', conditionSince: null, lastError: c.lastError };
  }

  private retentionConditionChanged(c: StorageCondition): void {
    if (c.failing) {
      this.log.error(
        { err: c.lastError, path: this.retention?.path },
        `retention writes are failing (${c.lastError}): durable frames are not acked, shims keep and resend them`,
      );
    } else {
      this.log.warn({ failedCommits: this.counters.retentionErrors }, 'retention writes succeed again: durable frames are acked again');
    }
  }

  private internalError(where: string, err: unknown): void {
    const key = `internal:${where}`;
    const now = Date.now();
    if (now - (this.errorLogAt.get(key) ?? 0) >= 10_000) {
      this.errorLogAt.set(key, now);
      this.log.error({ where, err: (err as Error).message, code: (err as ApmError).code }, `${where} failed: ${(err as Error).message}`);
    }
  }

  private emitMetrics(intervalStart: number, points: AggPoint[]): void {
    const PER_PACK = 2000;
    const stored: StoredPack[] = [];
    for (let i = 0; i < points.length; i += PER_PACK) {
      const packId = `${this.opts.agentId}:${this.bootId}:${++this.packSeq}`;
      const chunk = points.slice(i, i + PER_PACK);
      const intervalMs = this.opts.metricIntervalMs;
      const body = encodeMetricPack({ packId, intervalStart, intervalMs, points: chunk });
      stored.push({ packId, intervalStart, intervalMs, body, points: chunk.length });
      // Only the encoded form is kept: it is what goes upstream and into the retention.
      this.queue1.push({ kind: 'metrics', packId, intervalStart, intervalMs, points: chunk.length, body });
    }
    // The interval's raw frames are replaced by its packs in one transaction.
    this.retention?.sealInterval(intervalStart, stored);
  }

  private enqueue(q: BoundedQueue<Pack>, pack: Pack): void {
    const before = q.dropped;
    q.push(pack);
    if (q.dropped > before) this.drop(`${q.name}_full`, q.dropped - before);
  }

  private sent(pack: Pack): void {
    this.counters.sent[COUNTER_OF[pack.kind]] += pack.kind === 'metrics' ? pack.points : 1;
    if (pack.kind === 'metrics') this.retention?.packAcked(pack.packId);
    else if (pack.kind === 'btRegistration') this.retention?.btAcked(pack.name);
  }

  private stateChanged(to: SidecarState, cause: string, from: SidecarState): void {
    const frame = encodeStateChange({ state: to, cause });
    for (const s of this.sessions) if (s.isShim) s.send(frame);
    if (dropsQueue2(to)) {
      // No transaction detection from here on: what traces wait are dropped (DESIGN §6).
      const n = this.queue2.clear();
      if (n > 0) this.drop(to, n);
    }
    if (from === 'active' && to !== 'active') {
      // Events not yet acked (in flight at the loss, or queued) wait in the ring like new ones:
      // on return only those of the last event_replay_window_ms are posted.
      for (const p of this.queue1.takeEvents()) this.ring.push(p, p.kind === 'event' ? p.event.ts : p.kind === 'snapshot' ? p.snapshot.ts : Date.now());
    }
    if (to === 'active' && from !== 'active') {
      // Replay order: registrations, then metrics (queue1's lanes), then the events of the last window.
      for (const p of this.ring.take(Date.now())) this.queue1.push(p);
      this.sender.step();
    }
  }

  /**
   * Open the retention and load what a previous run left: dedup state, open intervals, unsent
   * packs and registrations. When it cannot be opened now (disk full, I/O error) the sidecar runs
   * on and refuses durable frames (not acked) until a later try, every second, succeeds.
   */
  private openRetention(starting = false): void {
    let store: RetentionStore;
    try {
      // The data_dir lock comes first: a retention is opened only by its one owner.
      this.lock ??= DataDirLock.acquire(this.opts.dataDir);
      store = RetentionStore.open(this.opts.dataDir, this.opts.retentionSynchronous, this.log);
    } catch (err) {
      // Another sidecar owns the data_dir, or the durability asked for cannot be had: refuse to start.
      // Anything else that is not passing (e.g. data_dir is not a directory) is a start-up error too;
      // a passing one (disk full, I/O error) is retried every second while the sidecar runs on.
      const passing = isPassingStorageError(err) || (err instanceof DataDirLockError && isPassingStorageError(err.reason));
      if (starting && !passing) throw err;
      const why = (err as Error).message;
      if (this.retentionClosedWhy === null) this.log.error({ err: why }, `retention cannot be opened (${why}): durable frames are not acked until it can`);
      this.retentionClosedWhy = why;
      return;
    }
    if (this.retentionClosedWhy !== null) this.log.warn({ path: store.path }, 'retention opened: durable frames are acked again');
    this.retentionClosedWhy = null;
    store.onError = () => {
      this.counters.retentionErrors++;
    };
    store.onCondition = (c) => this.retentionConditionChanged(c);
    this.retention = store;
    try {
      this.replay(store);
    } catch (err) {
      // What could be read is in memory; the rest stays in the file for the next start.
      this.log.error({ err: (err as Error).message, path: store.path }, 'reading the retention failed part way: continuing with what was read');
    }
  }

  private replay(store: RetentionStore): void {
    for (const { instanceId, seq } of store.loadSeqs()) if (this.seqs.isNew(instanceId, seq)) this.seqs.commit(instanceId, seq);
    for (const { instanceId, secretHash } of store.loadInstances()) if (instanceId !== DOGSTATSD_INSTANCE) this.bindings.bind(instanceId, secretHash);
    const frames = store.loadFrames();
    for (const f of frames) {
      try {
        this.aggregator.add(decodeMetrics(f.payload, this.seriesCache));
      } catch (err) {
        this.log.warn({ instanceId: f.instanceId, seq: f.seq, code: (err as ApmError).code }, 'skipping an unreadable retained frame');
      }
    }
    const packs = store.loadPacks();
    let points = 0;
    for (const p of packs) {
      try {
        // Decoded once to check it (a pack the collector cannot read would be resent forever), then kept encoded.
        const n = decodeMetricPack(p.body, this.seriesCache).points.length;
        points += n;
        this.queue1.push({ kind: 'metrics', packId: p.packId, intervalStart: p.intervalStart, intervalMs: p.intervalMs, points: n, body: p.body });
      } catch (err) {
        this.log.warn({ packId: p.packId, code: (err as ApmError).code }, 'skipping an unreadable retained pack');
        store.packAcked(p.packId);
      }
    }
    const bts = store.loadBt();
    for (const b of bts) this.queue1.push({ kind: 'btRegistration', origin: { app: b.app, instanceId: b.instanceId, pid: b.pid }, name: b.name, ts: b.ts });
    for (const name of store.knownBt()) this.knownBt.add(name);
    this.log.info(
      { path: store.path, synchronous: this.opts.retentionSynchronous, frames: frames.length, packs: packs.length, points, btRegistrations: bts.length },
      'retention opened',
    );
  }

  /** A live socket means another sidecar: refuse before touching anything, naming its pid when it answers. */
  private async refuseLiveSocket(): Promise<void> {
    const path = this.opts.socketPath;
    try {
      if (!lstatSync(path).isSocket()) return; // claimSocketPath refuses it later, with its own message
    } catch {
      return;
    }
    if (!(await probeSocket(path))) return;
    let pid: unknown = null;
    try {
      pid = (await requestStatus(path, 1000)).pid;
    } catch {
      // a listener that is not a sidecar, or a hung one: still live
    }
    const who = typeof pid === 'number' ? ` (pid ${pid})` : '';
    throw new SocketPathError('ERR_SOCKET_IN_USE', `another sidecar is already listening on ${path}${who}; refusing to start`);
  }

  /** The DogStatsD window becomes one metrics message, handled like a shim's flush (retained, then aggregated). */
  private flushDogStatsd(): void {
    const agg = this.dogstatsd;
    if (agg === null) return;
    // After a late opening of the retention, the seqs it held come first.
    const msg = agg.take(Math.max(this.dogstatsdSeq, this.seqs.last(DOGSTATSD_INSTANCE)) + 1, Date.now());
    if (msg === null) return;
    this.dogstatsdSeq = msg.seq;
    this.counters.received.metrics += msg.points.length;
    this.aggregator.add(msg);
    this.seqs.commit(DOGSTATSD_INSTANCE, msg.seq);
    const frame = encodeMetrics(msg);
    // Datagrams have no sender to resend them: on a failed commit they are kept in memory only
    // (counted in retentionErrors, reported by the retention condition).
    this.retention?.addFrame(
      { instanceId: DOGSTATSD_INSTANCE, seq: msg.seq, intervalStart: this.aggregator.intervalOf(msg.ts), payload: frame.subarray(5) },
      () => {},
    );
  }

  drop(reason: string, n = 1): void {
    this.counters.dropped[reason] = (this.counters.dropped[reason] ?? 0) + n;
  }
}

function origin(h: ShimIdentity): Origin {
  return { app: h.app, instanceId: h.instanceId, pid: h.pid };
}
