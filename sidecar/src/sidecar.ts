import { chmodSync, chownSync, unlinkSync } from 'node:fs';
import { type Server, type Socket, createServer } from 'node:net';
import {
  ApmError,
  TooManyConnectionsError,
  type ControlResult,
  type Hello,
  type Series,
  type ShimToSidecar,
  encodeStateChange,
  encodeWelcome,
} from '@apm-sidecar/proto';
import { type AggPoint, Aggregator } from './aggregator';
import { SeqTracker } from './dedup';
import type { Logger } from './logger';
import { COUNTER_OF, type Origin, type Pack } from './pack';
import { BoundedQueue } from './queue';
import { Sender } from './sender';
import { ShimSession, type SessionHost } from './shim-session';
import { claimSocketPath, prepareSocketDir } from './socket-path';
import { StateHolder } from './state';
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
  metricIntervalMs: number;
  queue1Size: number;
  queue2Size: number;
  maxFrameBytes: number;
  maxSeries: number;
  maxShims: number;
  shutdownTimeoutMs: number;
  log: Logger;
}

type CounterName = 'metrics' | 'traces' | 'activeStacks' | 'events' | 'snapshots' | 'btRegistrations';
const counterSet = (): Record<CounterName, number> => ({ metrics: 0, traces: 0, activeStacks: 0, events: 0, snapshots: 0, btRegistrations: 0 });

/** The composition root: IPC server, sessions, aggregation, queues, sender and transport. */
export class Sidecar implements SessionHost {
  readonly maxFrameBytes: number;
  readonly seriesCache = new Map<string, Series>();
  readonly state: StateHolder;
  private readonly log: Logger;
  private readonly server: Server;
  private readonly sessions = new Set<ShimSession>();
  private readonly seqs = new SeqTracker();
  private readonly aggregator: Aggregator;
  readonly queue1: BoundedQueue<Pack>;
  readonly queue2: BoundedQueue<Pack>;
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
  };
  private readonly errorLogAt = new Map<string, number>();

  constructor(private readonly opts: SidecarOptions) {
    this.log = opts.log;
    this.maxFrameBytes = opts.maxFrameBytes;
    this.state = new StateHolder(opts.log);
    const dropEpisode = (q: BoundedQueue<Pack>, phase: 'start' | 'end', total: number) => {
      if (phase === 'start') this.log.warn({ queue: q.name, capacity: q.capacity }, `${q.name} is full: dropping the oldest packs`);
      else this.log.warn({ queue: q.name, dropped: total }, `${q.name} has room again after dropping ${total} packs`);
    };
    this.queue1 = new BoundedQueue<Pack>('queue1', opts.queue1Size, dropEpisode);
    this.queue2 = new BoundedQueue<Pack>('queue2', opts.queue2Size, dropEpisode);
    this.aggregator = new Aggregator(opts.metricIntervalMs, Math.max(2 * opts.flushMs, 500), opts.maxSeries, (start, points) => this.emitMetrics(start, points));
    const up = opts.upstream;
    this.transport =
      up.kind === 'debug'
        ? new DebugTransport(opts.agentId, up.output)
        : new TcpTransport({ ...up, agentId: opts.agentId, version: SIDECAR_VERSION, apps: () => this.apps() });
    this.sender = new Sender([this.queue1, this.queue2], this.transport, (pack) => this.sent(pack));
    this.server = createServer((socket) => this.accept(socket));
    this.state.onChange((to, cause) => {
      const frame = encodeStateChange({ state: to, cause });
      for (const s of this.sessions) if (s.isShim) s.send(frame);
    });
  }

  get socketPath(): string {
    return this.opts.socketPath;
  }

  async start(): Promise<void> {
    const gid = prepareSocketDir(this.opts.socketPath, this.opts.socketGroup);
    const replaced = await claimSocketPath(this.opts.socketPath);
    if (replaced) this.log.warn({ socket: this.opts.socketPath }, 'replaced a stale socket file (nothing was listening)');
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.opts.socketPath, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    this.listening = true;
    chmodSync(this.opts.socketPath, gid === null ? 0o600 : 0o660);
    if (gid !== null) chownSync(this.opts.socketPath, process.getuid?.() ?? 0, gid);
    this.server.on('error', (err) => this.log.error({ err }, 'IPC server error'));
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
      if (this.listening) this.server.close();
      for (const s of this.sessions) s.socket.end();
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

  /** Ready: the IPC socket is listening and the sidecar is not shutting down. */
  readiness(): { ready: boolean; reason: string } {
    if (!this.listening) return { ready: false, reason: 'IPC socket not listening yet' };
    if (this.stopping !== null) return { ready: false, reason: 'shutting down' };
    const up = this.transport.readiness(this.opts.readyMaxAckAgeMs);
    return { ready: up.ready, reason: `listening on ${this.opts.socketPath}; ${up.reason}` };
  }

  // --- SessionHost ----------------------------------------------------------

  hello(session: ShimSession, hello: Hello): Buffer {
    if (!this.apps().includes(hello.app)) setImmediate(() => this.transport.appsChanged?.());
    this.log.info({ session: session.id, app: hello.app, appPid: hello.pid, instanceId: hello.instanceId, shimVersion: hello.shimVersion }, 'shim connected');
    return encodeWelcome({
      state: this.state.state,
      settings: { flushMs: this.opts.flushMs, maxFrameBytes: this.opts.maxFrameBytes },
      ackedSeq: this.seqs.last(hello.instanceId),
      agentId: this.opts.agentId,
      sidecarVersion: SIDECAR_VERSION,
    });
  }

  message(session: ShimSession, msg: ShimToSidecar): void {
    const hello = session.hello as Hello;
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
        session.ack(m.seq);
        return;
      }
      case 'BtRegistration': {
        const b = msg.body;
        if (!this.seqs.isNew(hello.instanceId, b.seq)) {
          this.counters.duplicates++;
          session.ack(this.seqs.last(hello.instanceId));
          return;
        }
        this.counters.received.btRegistrations++;
        this.queue1.push({ kind: 'btRegistration', origin: origin(hello), name: b.name, ts: b.ts });
        this.seqs.commit(hello.instanceId, b.seq);
        session.ack(b.seq);
        break;
      }
      case 'Trace':
        this.counters.received.traces++;
        this.enqueue(this.queue2, { kind: 'trace', origin: origin(hello), trace: msg.body });
        break;
      case 'ActiveStack':
        this.counters.received.activeStacks++;
        this.enqueue(this.queue2, { kind: 'activeStack', origin: origin(hello), stack: msg.body });
        break;
      case 'Event':
        this.counters.received.events++;
        this.enqueue(this.queue1, { kind: 'event', origin: origin(hello), event: msg.body });
        break;
      case 'Snapshot':
        this.counters.received.snapshots++;
        this.enqueue(this.queue1, { kind: 'snapshot', origin: origin(hello), snapshot: msg.body });
        break;
      case 'Heartbeat':
        return;
      case 'Hello':
        return;
    }
    this.sender.step();
  }

  status(): unknown {
    const agg = this.aggregator.stats();
    const q = (x: BoundedQueue<Pack>) => ({ depth: x.depth, capacity: x.capacity, dropped: x.dropped });
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
      // No durable retention store with this transport: nothing is held beyond the aggregation window.
      retention: { store: 'none', rows: 0, oldestAgeMs: 0 },
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
          const h = s.hello as Hello;
          return {
            session: s.id,
            app: h.app,
            pid: h.pid,
            instanceId: h.instanceId,
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
      this.log.warn({ session: session.id, code: err.code, app: session.hello?.app, appPid: session.hello?.pid, total: this.counters.ipcErrors[err.code] }, `closing IPC connection: ${err.message}`);
    }
  }

  closed(session: ShimSession): void {
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
    this.aggregator.tick(Date.now());
    // Keep the series cache bounded: it only saves re-parsing, so dropping it is safe.
    if (this.seriesCache.size > this.opts.maxSeries * 2) this.seriesCache.clear();
    this.sender.step();
  }

  private emitMetrics(intervalStart: number, points: AggPoint[]): void {
    const PER_PACK = 2000;
    for (let i = 0; i < points.length; i += PER_PACK) {
      const packId = `${this.opts.agentId}:${this.bootId}:${++this.packSeq}`;
      this.enqueue(this.queue1, { kind: 'metrics', packId, intervalStart, intervalMs: this.opts.metricIntervalMs, points: points.slice(i, i + PER_PACK) });
    }
  }

  private enqueue(q: BoundedQueue<Pack>, pack: Pack): void {
    const before = q.dropped;
    q.push(pack);
    if (q.dropped > before) this.drop(`${q.name}_full`, q.dropped - before);
  }

  private sent(pack: Pack): void {
    this.counters.sent[COUNTER_OF[pack.kind]] += pack.kind === 'metrics' ? pack.points.length : 1;
  }

  drop(reason: string, n = 1): void {
    this.counters.dropped[reason] = (this.counters.dropped[reason] ?? 0) + n;
  }
}

function origin(h: Hello): Origin {
  return { app: h.app, instanceId: h.instanceId, pid: h.pid };
}
