import {
  type EventPack,
  MetricKind,
  type MetricKindCode,
  type MetricPoint,
  type MetricsMessage,
  Sketch,
  encodeSeries,
  seriesKey,
  sketchKey,
  SKETCH_MIN_VALUE,
} from '@apm-sidecar/proto';
import { type InvalidReason, type ParsedMetric, parseLine } from './dogstatsd-parse';

/**
 * DogStatsD lines (see dogstatsd-parse.ts) aggregated into the product's metric kinds:
 *
 *   c          counter: each value / sample rate
 *   g          gauge: the last value
 *   ms, h, d   histogram, one sketch per series; with a sample rate each value counts round(1 / rate) times
 *   s          gauge: the number of distinct members seen in the current reporting interval
 *              (`metric_interval_ms`), re-sent after every window that saw the set, so the interval's
 *              last value is its distinct count
 *
 * Lines are aggregated for one flush_ms window, then handed over as one metrics message, like a
 * shim's flush; lines carrying `|T` go out as their own message stamped with that time.
 * Events and service checks are handed to `onEvent` as they arrive.
 */
export interface DogStatsdCounts {
  packets: number;
  lines: number;
  metrics: number;
  events: number;
  serviceChecks: number;
  invalid: number;
  invalidByReason: Partial<Record<InvalidReason, number>>;
}

const KIND: Record<ParsedMetric['type'], MetricKindCode> = {
  c: MetricKind.Counter,
  g: MetricKind.Gauge,
  ms: MetricKind.Histogram,
  h: MetricKind.Histogram,
  d: MetricKind.Histogram,
  s: MetricKind.Gauge,
};
const MAX_SERIES = 100_000;
/** Members remembered per set per interval; past it the set's count stops growing and lines are counted. */
const MAX_SET_MEMBERS = 10_000;
/** A weight above this would make one sampled value outweigh a whole window's traffic. */
const MAX_WEIGHT = 1_000_000;
/** How far ahead of this clock a `|T` timestamp may be (clients on this host share its clock). */
const MAX_FUTURE_MS = 10 * 60_000;

interface SetState {
  interval: number;
  members: Set<string>;
}

/** One window of points: the current flush window, or the lines stamped with one `|T` second. */
type Window = Map<string, MetricPoint>;

export interface DogStatsdAggregatorOptions {
  /** The reporting interval a timestamp belongs to (sets count distinct members per interval). */
  intervalOf?: (ts: number) => number;
  onEvent?: (event: EventPack) => void;
  /** The first line refused for each reason (to log it once). */
  onFirstInvalid?: (reason: InvalidReason, line: string) => void;
}

export class DogStatsdAggregator {
  private window: Window = new Map();
  private stamped = new Map<number, Window>();
  private held = 0;
  /** Series of the flush window that are sets (their point is filled in at take()). */
  private setKeys = new Set<string>();
  private readonly sets = new Map<string, SetState>();
  private windowStart = Date.now();
  readonly counts: DogStatsdCounts = { packets: 0, lines: 0, metrics: 0, events: 0, serviceChecks: 0, invalid: 0, invalidByReason: {} };

  constructor(private readonly opts: DogStatsdAggregatorOptions = {}) {}

  /** One datagram: one or more lines. */
  packet(buf: Buffer): void {
    this.counts.packets++;
    for (const line of buf.toString('utf8').split('\n')) {
      // Clients on Windows end lines with \r\n; a trailing \r is not part of the last field.
      const l = line.endsWith('\r') ? line.slice(0, -1) : line;
      if (l.length > 0) this.line(l);
    }
  }

  line(line: string): void {
    this.counts.lines++;
    const p = parseLine(line);
    if (p.kind === 'invalid') return this.invalid(p.reason, line);
    if (p.kind === 'event') {
      if (p.event.type === 'dogstatsd.service_check') this.counts.serviceChecks++;
      else this.counts.events++;
      this.opts.onEvent?.(p.event);
      return;
    }
    // A point stamped far ahead would hold its interval open (and memory) until that time comes.
    if (p.ts !== null && p.ts > Date.now() + MAX_FUTURE_MS) return this.invalid('bad_timestamp', line);
    const kind = KIND[p.type];
    const bytes = encodeSeries(kind, p.name, p.tags);
    const key = seriesKey(bytes);
    const w = p.ts === null ? this.window : this.stampedWindow(p.ts);
    let a = w.get(key);
    if (a === undefined && this.held >= MAX_SERIES) return this.invalid('series_limit', line);
    if (p.type === 's' && !this.addMember(key, p.member)) return this.invalid('set_limit', line);
    if (a === undefined) {
      a = {
        series: { key, kind, name: p.name, tags: p.tags },
        count: 0,
        sum: 0,
        min: Number.POSITIVE_INFINITY,
        max: Number.NEGATIVE_INFINITY,
        last: Number.NaN,
        sketch: kind === MetricKind.Histogram ? new Sketch() : null,
      };
      w.set(key, a);
      this.held++;
    }
    if (p.type === 's') {
      this.setKeys.add(key);
      this.counts.metrics++;
      return;
    }
    const weight = Math.min(MAX_WEIGHT, Math.max(1, Math.round(1 / p.rate)));
    const scaled = p.values.map((v) => (kind === MetricKind.Counter ? v / p.rate : v * weight));
    const total = scaled.reduce((s, v) => s + v, 0);
    if (!Number.isFinite(a.sum + total)) return this.invalid('overflow', line);
    for (let i = 0; i < p.values.length; i++) {
      const v = p.values[i] as number;
      if (a.sketch !== null) addWeighted(a.sketch, v, weight);
      else a.count++;
      const seen = kind === MetricKind.Counter ? (scaled[i] as number) : v;
      if (seen < a.min) a.min = seen;
      if (seen > a.max) a.max = seen;
      if (kind === MetricKind.Gauge) a.last = v;
    }
    if (a.sketch !== null) a.count = a.sketch.count;
    a.sum += total;
    this.counts.metrics++;
  }

  /**
   * The window so far as metrics messages, seqs from `nextSeq` on: the flush window (stamped with
   * its start) first, then one per `|T` second seen. Empty when nothing arrived.
   */
  take(nextSeq: number, now: number): MetricsMessage[] {
    const ts = this.windowStart;
    this.windowStart = now;
    const out: MetricsMessage[] = [];
    this.finishSets(ts);
    if (this.window.size > 0) out.push({ seq: nextSeq + out.length, ts, windowMs: Math.max(0, now - ts), points: [...this.window.values()] });
    for (const [t, w] of [...this.stamped].sort((x, y) => x[0] - y[0])) out.push({ seq: nextSeq + out.length, ts: t, windowMs: 0, points: [...w.values()] });
    this.window = new Map();
    this.stamped = new Map();
    this.held = 0;
    return out;
  }

  private invalid(reason: InvalidReason, line: string): void {
    if (this.counts.invalidByReason[reason] === undefined) this.opts.onFirstInvalid?.(reason, line);
    this.counts.invalid++;
    this.counts.invalidByReason[reason] = (this.counts.invalidByReason[reason] ?? 0) + 1;
  }

  private stampedWindow(ts: number): Window {
    let w = this.stamped.get(ts);
    if (w === undefined) {
      w = new Map();
      this.stamped.set(ts, w);
    }
    return w;
  }

  /** Members are kept per reporting interval; a window that starts a new interval starts the sets afresh. */
  private addMember(key: string, member: string): boolean {
    const interval = this.intervalOf(this.windowStart);
    let s = this.sets.get(key);
    if (s === undefined || s.interval !== interval) {
      s = { interval, members: new Set() };
      this.sets.set(key, s);
    }
    if (s.members.has(member)) return true;
    if (s.members.size >= MAX_SET_MEMBERS) return false;
    s.members.add(member);
    return true;
  }

  /** Each set seen in this window becomes a gauge point: its distinct count so far in the interval. */
  private finishSets(windowStart: number): void {
    const interval = this.intervalOf(windowStart);
    for (const key of this.setKeys) {
      const a = this.window.get(key);
      if (a === undefined) continue;
      const n = this.sets.get(key)?.members.size ?? 0;
      a.count = 1;
      a.sum = n;
      a.min = n;
      a.max = n;
      a.last = n;
    }
    this.setKeys = new Set();
    // Sets of earlier intervals are done: their memory goes.
    for (const [key, s] of this.sets) if (s.interval !== interval) this.sets.delete(key);
  }

  private intervalOf(ts: number): number {
    return this.opts.intervalOf?.(ts) ?? ts;
  }
}

/** Sketch.add n times over, in one step (a sampled value stands for round(1 / rate) values). */
function addWeighted(s: Sketch, v: number, n: number): void {
  s.count += n;
  s.sum += v * n;
  if (v < s.min) s.min = v;
  if (v > s.max) s.max = v;
  if (v > SKETCH_MIN_VALUE) s.pos.add(sketchKey(v), n);
  else if (v < -SKETCH_MIN_VALUE) s.neg.add(sketchKey(-v), n);
  else s.zero += n;
}
