import { unlinkSync } from 'node:fs';
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
import { RetentionStore, type StoredPack, type Synchronous } from './retention/store';
import type { Logger } from './logger';
import { COUNTER_OF, type Origin, type Pack } from './pack';
import { BoundedQueue } from './queue';
import { Sender } from './sender';
import { type PeerLimits, ShimSession, type SessionHost, type ShimIdentity } from './shim-session';
import { claimSocketPath, describeTightening, listenPrivately, prepareSocketDir } from './socket-path';
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
    retentionErrors: 0,
  };
  private lastPurge = 0;
  private dogstatsd: DogStatsdAggregator | null = null;
  private dogstatsdListeners: DogStatsdListeners | null = null;
  private dogstatsdTimer: NodeJS.Timeout | null = null;
  private dogstatsdSeq = 0;
  private retentionErrorLoggedAt = 0;
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
    this.openRetention();
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
    this.log.info({ socket: this.opts.socketPath, transport: this.transport.name, agentId: this.opts.agentId }, 'listening for shims');
  }

  /** Stop accepting, emit open intervals, send what can be sent before the deadline. Safe to call twice. */
  stop(): Promise<void> {
    if (this.stopping !== null) return this.stopping;
    this.stopping = (async () => {
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
        this.counters.received.metrics += m.points.length;
        const overflowBefore = this.aggregator.droppedOverflow;
        const dropped = this.aggregator.add(m);
        if (dropped > 0) this.drop('series_limit', dropped);
        if (this.aggregator.droppedOverflow > overflowBefore) this.drop('overflow', this.aggregator.droppedOverflow - overflowBefore);
        this.seqs.commit(hello.instanceId, m.seq);
        // Acked once the frame is committed to the retention (group commit, same turn of the loop).
        (this.retention as RetentionStore).addFrame(
          { instanceId: hello.instanceId, seq: m.seq, intervalStart: this.aggregator.intervalOf(m.ts), payload: Buffer.from(payload) },
          (err) => {
            if (err !== null) this.retentionFailed(err);
            session.ack(m.seq);
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
        this.seqs.commit(hello.instanceId, b.seq);
        const isNew = !this.knownBt.has(b.name);
        if (isNew) {
          this.knownBt.add(b.name);
          this.counters.received.btRegistrations++;
        }
        const o = origin(hello);
        (this.retention as RetentionStore).addBt({ name: b.name, ts: b.ts, app: o.app, instanceId: o.instanceId, pid: o.pid }, b.seq, (err) => {
          if (err !== null) this.retentionFailed(err);
          session.ack(b.seq);
          if (isNew) {
            this.queue1.push({ kind: 'btRegistration', origin: o, name: b.name, ts: b.ts });
            this.sender.step();
          }
        });
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
      this.retention?.addInstance(hello.instanceId, hash, (err) => {
        if (err !== null) this.retentionFailed(err);
      });
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
    const now = Date.now();
    this.aggregator.tick(now);
    if (now - this.lastPurge >= 1000) {
      this.lastPurge = now;
      this.purge(now);
    }
    // Keep the series cache bounded: it only saves re-parsing, so dropping it is safe.
    if (this.seriesCache.size > this.opts.maxSeries * 2) this.seriesCache.clear();
    this.sender.step();
  }

  /** Metrics older than retention_ms are dropped (memory and SQLite) and counted. */
  private purge(now: number): void {
    const cutoff = now - this.opts.retentionMs;
    let points = 0;
    for (const p of this.queue1.expireMetrics(cutoff)) if (p.kind === 'metrics') points += p.points;
    this.retention?.purge(cutoff, now - 7 * 24 * 3600 * 1000);
    if (points > 0) {
      this.drop('retention_expired', points);
      this.log.warn({ points, retentionMs: this.opts.retentionMs }, `dropped ${points} metric points older than retention_ms`);
    }
    this.ring.expire(now);
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

  /** Open the retention and load what a previous run left: dedup state, open intervals, unsent packs and registrations. */
  private openRetention(): void {
    const store = RetentionStore.open(this.opts.dataDir, this.opts.retentionSynchronous, this.log);
    this.retention = store;
    for (const { instanceId, seq } of store.loadSeqs()) this.seqs.commit(instanceId, seq);
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
    this.knownBt = store.knownBt();
    this.log.info(
      { path: store.path, synchronous: this.opts.retentionSynchronous, frames: frames.length, packs: packs.length, points, btRegistrations: bts.length },
      'retention opened',
    );
  }

  /** The DogStatsD window becomes one metrics message, handled like a shim's flush (retained, then aggregated). */
  private flushDogStatsd(): void {
    const agg = this.dogstatsd;
    if (agg === null) return;
    const msg = agg.take(this.dogstatsdSeq + 1, Date.now());
    if (msg === null) return;
    this.dogstatsdSeq = msg.seq;
    this.counters.received.metrics += msg.points.length;
    this.aggregator.add(msg);
    this.seqs.commit(DOGSTATSD_INSTANCE, msg.seq);
    const frame = encodeMetrics(msg);
    this.retention?.addFrame(
      { instanceId: DOGSTATSD_INSTANCE, seq: msg.seq, intervalStart: this.aggregator.intervalOf(msg.ts), payload: frame.subarray(5) },
      (err) => {
        if (err !== null) this.retentionFailed(err);
      },
    );
  }

  private retentionFailed(err: Error): void {
    this.counters.retentionErrors++;
    const now = Date.now();
    if (now - this.retentionErrorLoggedAt >= 10_000) {
      this.retentionErrorLoggedAt = now;
      this.log.error({ err: err.message, total: this.counters.retentionErrors }, 'retention write failed: data is kept in memory only');
    }
  }

  drop(reason: string, n = 1): void {
    this.counters.dropped[reason] = (this.counters.dropped[reason] ?? 0) + n;
  }
}

function origin(h: ShimIdentity): Origin {
  return { app: h.app, instanceId: h.instanceId, pid: h.pid };
}
