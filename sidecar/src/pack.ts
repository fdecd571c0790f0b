import { type ActiveStackPack, type EventPack, METRIC_KIND_NAMES, type MetricPoint, type ProfilePack, type SnapshotPack } from '@apm-sidecar/proto';
import { decodeMetricPack } from '@apm-sidecar/proto/upstream';

/**
 * What the send queues hold. queue1: metrics, events, snapshots, business-
 * transaction registrations (performance data sent on a schedule); queue2:
 * traces and active stacks (WhaTap's ProfilePack and ActiveStackPack).
 */
export interface Origin {
  app: string;
  instanceId: string;
  pid: number;
}

export type Pack =
  /** A closed interval, kept encoded as it is sent upstream (and retained); `points` is how many it holds. */
  | { kind: 'metrics'; packId: string; intervalStart: number; intervalMs: number; points: number; body: Buffer }
  | { kind: 'trace'; origin: Origin; trace: ProfilePack }
  | { kind: 'activeStack'; origin: Origin; stack: ActiveStackPack }
  | { kind: 'event'; origin: Origin; event: EventPack }
  | { kind: 'snapshot'; origin: Origin; snapshot: SnapshotPack }
  | { kind: 'btRegistration'; origin: Origin; name: string; ts: number };

export type PackKind = Pack['kind'];

/** Counter names per kind, as in status `counters.received|sent`. */
export const COUNTER_OF: Record<PackKind, 'metrics' | 'traces' | 'activeStacks' | 'events' | 'snapshots' | 'btRegistrations'> = {
  metrics: 'metrics',
  trace: 'traces',
  activeStack: 'activeStacks',
  event: 'events',
  snapshot: 'snapshots',
  btRegistration: 'btRegistrations',
};

export interface PointJson {
  name: string;
  tags: Record<string, string>;
  type: string;
  ts: number;
  count: number;
  sum: number;
  min: number;
  max: number;
  value?: number;
  p50?: number;
  p95?: number;
  p99?: number;
}

export function pointToJson(p: MetricPoint, intervalStart: number): PointJson {
  const out: PointJson = {
    name: p.series.name,
    tags: p.series.tags,
    type: METRIC_KIND_NAMES[p.series.kind],
    ts: intervalStart,
    count: p.count,
    sum: p.sum,
    min: p.min,
    max: p.max,
  };
  if (p.series.kind === 1) out.value = p.last;
  if (p.sketch !== null) {
    out.p50 = p.sketch.quantile(0.5);
    out.p95 = p.sketch.quantile(0.95);
    out.p99 = p.sketch.quantile(0.99);
  }
  return out;
}

/** A JSON-friendly view of a pack (the `debug` transport prints these). */
export function packToJson(agentId: string, pack: Pack): Record<string, unknown> {
  switch (pack.kind) {
    case 'metrics':
      return {
        pack: 'metrics',
        agentId,
        packId: pack.packId,
        intervalStart: pack.intervalStart,
        intervalMs: pack.intervalMs,
        points: decodeMetricPack(pack.body).points.map((pt) => pointToJson(pt, pack.intervalStart)),
      };
    case 'trace':
      return { pack: 'trace', agentId, ...pack.origin, trace: pack.trace };
    case 'activeStack':
      return { pack: 'activeStack', agentId, ...pack.origin, stack: pack.stack };
    case 'event':
      return { pack: 'event', agentId, ...pack.origin, event: pack.event };
    case 'snapshot':
      return { pack: 'snapshot', agentId, ...pack.origin, snapshot: pack.snapshot };
    case 'btRegistration':
      return { pack: 'btRegistration', agentId, ...pack.origin, name: pack.name, ts: pack.ts };
  }
}
