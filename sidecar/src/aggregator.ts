import { MetricKind, type MetricsMessage, type Series, Sketch } from '@apm-sidecar/proto';

/**
 * Merges shims' points into reporting intervals of `intervalMs`.
 *
 * Identity of an aggregated point: (series, interval start); the agent is this
 * sidecar. Points land in interval floor(ts / intervalMs) · intervalMs. An
 * interval is emitted once it ended more than `graceMs` ago (shims flush every
 * flush_ms, so their last points for it have arrived). A straggler for an
 * interval already emitted — a shim resending after a reconnect — re-opens it
 * and goes out in the next tick as another contribution to the same interval.
 *
 * Each interval also lists the retained frames folded into it (`FrameRef`), so that its seal
 * replaces exactly those frames by its packs: a straggler committed meanwhile is not in them and
 * must stay retained until its own (re-opened) interval is sealed.
 *
 * Memory is bounded by `maxPoints` (series × open intervals); a new point past
 * it is dropped and counted.
 */
export interface AggPoint {
  series: Series;
  intervalStart: number;
  count: number;
  sum: number;
  min: number;
  max: number;
  /** Gauges: the value with the latest timestamp. */
  last: number;
  lastTs: number;
  sketch: Sketch | null;
}

/** A retained frame: (instance id, seq) is its key in the retention. */
export interface FrameRef {
  instanceId: string;
  seq: number;
}

export interface AggregatorStats {
  intervals: number;
  points: number;
  oldestIntervalStart: number | null;
}

export class Aggregator {
  private readonly intervals = new Map<number, Map<string, AggPoint>>();
  /** The retained frames folded into each open interval. */
  private readonly frames = new Map<number, FrameRef[]>();
  private held = 0;
  droppedSeriesLimit = 0;
  droppedOverflow = 0;

  constructor(
    readonly intervalMs: number,
    private readonly graceMs: number,
    private readonly maxPoints: number,
    private readonly emit: (intervalStart: number, points: AggPoint[], frames: FrameRef[]) => void,
  ) {}

  stats(): AggregatorStats {
    let oldest: number | null = null;
    for (const k of this.intervals.keys()) if (oldest === null || k < oldest) oldest = k;
    return { intervals: this.intervals.size, points: this.held, oldestIntervalStart: oldest };
  }

  /** The start of the interval a point stamped `ts` belongs to. */
  intervalOf(ts: number): number {
    return Math.floor(ts / this.intervalMs) * this.intervalMs;
  }

  /** Merge one shim frame (`frame`: its key in the retention); returns how many points were dropped by the series limit. */
  add(msg: MetricsMessage, frame?: FrameRef): number {
    const start = this.intervalOf(msg.ts);
    if (frame !== undefined) {
      const list = this.frames.get(start);
      if (list === undefined) this.frames.set(start, [frame]);
      else list.push(frame);
    }
    let bucket = this.intervals.get(start);
    if (bucket === undefined) {
      bucket = new Map();
      this.intervals.set(start, bucket);
    }
    let dropped = 0;
    for (const p of msg.points) {
      const key = p.series.key;
      const agg = bucket.get(key);
      if (agg === undefined) {
        if (this.held >= this.maxPoints) {
          dropped++;
          continue;
        }
        this.held++;
        let sketch: Sketch | null = null;
        if (p.sketch !== null) {
          sketch = new Sketch();
          sketch.merge(p.sketch);
        }
        bucket.set(key, { series: p.series, intervalStart: start, count: p.count, sum: p.sum, min: p.min, max: p.max, last: p.last, lastTs: msg.ts, sketch });
        continue;
      }
      if (!Number.isFinite(agg.sum + p.sum)) {
        // Each shim's sum was finite; their total is not. Keep what we have, count the rest.
        this.droppedOverflow++;
        continue;
      }
      agg.count += p.count;
      agg.sum += p.sum;
      if (p.min < agg.min) agg.min = p.min;
      if (p.max > agg.max) agg.max = p.max;
      if (p.series.kind === MetricKind.Gauge && msg.ts >= agg.lastTs) {
        agg.last = p.last;
        agg.lastTs = msg.ts;
      }
      if (p.sketch !== null && agg.sketch !== null) agg.sketch.merge(p.sketch);
    }
    // Every point dropped: the interval stays empty, and its frame waits in the retention for the purge.
    if (bucket.size === 0) {
      this.intervals.delete(start);
      this.frames.delete(start);
    }
    this.droppedSeriesLimit += dropped;
    return dropped;
  }

  /** Emit every interval that ended more than graceMs before `now` (all of them when `all`). */
  tick(now: number, all = false): number {
    let emitted = 0;
    const ready = [...this.intervals.keys()].filter((start) => all || start + this.intervalMs + this.graceMs <= now).sort((a, b) => a - b);
    for (const start of ready) {
      const bucket = this.intervals.get(start) as Map<string, AggPoint>;
      const frames = this.frames.get(start) ?? [];
      this.intervals.delete(start);
      this.frames.delete(start);
      this.held -= bucket.size;
      emitted += bucket.size;
      this.emit(start, [...bucket.values()], frames);
    }
    return emitted;
  }
}
