import type { SidecarState } from '@apm-sidecar/proto';
import type { Aggregator } from './aggregator';
import type { Counters } from './counters';
import type { DogStatsdInput, DogStatsdStatus } from './dogstatsd-input';
import type { IpcServer, ShimStatus } from './ipc-server';
import type { Outbox } from './outbox';
import type { RetentionCondition, RetentionHolder } from './retention/holder';
import type { SpacePolicy } from './retention/space-policy';
import type { Synchronous } from './retention/store';
import type { StateHolder } from './state';
import type { Transport } from './transport/transport';

export const SIDECAR_VERSION = '0.1.0';

interface QueueStatus {
  depth: number;
  capacity: number;
  dropped: number;
}

/** `apm-sidecar status --json` (DESIGN §8); /metrics is made from the same snapshot. */
export interface SidecarStatus {
  state: SidecarState;
  stateSince: string;
  stateCause: string;
  agentId: string;
  version: string;
  pid: number;
  uptimeMs: number;
  socket: string;
  transport: string;
  upstream: Record<string, unknown>;
  queues: { queue1: QueueStatus; queue2: QueueStatus };
  retention: {
    rows: number;
    /** Rows by kind: only while the retention is open. */
    frames?: number;
    packs?: number;
    btUnsent?: number;
    oldestAgeMs: number;
    path: string | null;
    retentionMs: number;
    synchronous: Synchronous;
    usedBytes: number | null;
    fileBytes: number | null;
    /** Pages inside the file that are free for reuse: space the retention has without growing. */
    freelistBytes: number | null;
    freeBytes: number | null;
    maxBytes: number;
    minFreeBytes: number;
  } & RetentionCondition;
  eventRing: { size: number; windowMs: number };
  dogstatsd: DogStatsdStatus;
  aggregation: { intervalMs: number; openIntervals: number; points: number; oldestAgeMs: number; series: number };
  counters: Counters;
  shims: ShimStatus[];
}

/** The parts a snapshot reads, and the settings it reports. */
export interface StatsSources {
  agentId: string;
  socketPath: string;
  metricIntervalMs: number;
  retentionMs: number;
  retentionSynchronous: Synchronous;
  retentionMaxBytes: number;
  retentionMinFreeBytes: number;
  eventReplayWindowMs: number;
  state: StateHolder;
  transport: Transport;
  outbox: Outbox;
  retention: RetentionHolder;
  space: SpacePolicy;
  dogstatsd: DogStatsdInput;
  aggregator: Aggregator;
  ipc: IpcServer;
}

/**
 * The one stats object: the counters every part writes, and a snapshot of the parts' state.
 * `apm-sidecar status` returns the snapshot; /metrics (metrics.ts) is made from it too.
 */
export class SidecarStats {
  private readonly startedAt = Date.now();

  constructor(
    readonly counters: Counters,
    private readonly src: StatsSources,
  ) {}

  snapshot(): SidecarStatus {
    const s = this.src;
    const now = Date.now();
    const agg = s.aggregator.stats();
    const q = (x: QueueStatus): QueueStatus => ({ depth: x.depth, capacity: x.capacity, dropped: x.dropped });
    const store = s.retention.store;
    return {
      state: s.state.state,
      stateSince: new Date(s.state.since).toISOString(),
      stateCause: s.state.cause,
      agentId: s.agentId,
      version: SIDECAR_VERSION,
      pid: process.pid,
      uptimeMs: now - this.startedAt,
      socket: s.socketPath,
      transport: s.transport.name,
      upstream: s.transport.status(),
      queues: { queue1: q(s.outbox.queue1), queue2: q(s.outbox.queue2) },
      retention: {
        ...(store?.stats(now) ?? { rows: 0, oldestAgeMs: 0 }),
        path: store?.path ?? null,
        retentionMs: s.retentionMs,
        synchronous: s.retentionSynchronous,
        ...s.retention.condition(s.space.overLimit !== null),
        usedBytes: s.space.usage?.usedBytes ?? null,
        fileBytes: s.space.usage?.fileBytes ?? null,
        freelistBytes: s.space.usage?.freelistBytes ?? null,
        freeBytes: s.space.freeBytes,
        maxBytes: s.retentionMaxBytes,
        minFreeBytes: s.retentionMinFreeBytes,
      },
      eventRing: { size: s.outbox.ring.size, windowMs: s.eventReplayWindowMs },
      dogstatsd: s.dogstatsd.status(),
      aggregation: {
        intervalMs: s.metricIntervalMs,
        openIntervals: agg.intervals,
        points: agg.points,
        oldestAgeMs: agg.oldestIntervalStart === null ? 0 : now - agg.oldestIntervalStart,
        series: s.ipc.seriesCache.size,
      },
      counters: this.counters,
      shims: s.ipc.shims(),
    };
  }
}
