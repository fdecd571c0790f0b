import {
  type EventPack,
  MessageType,
  MetricKind,
  type MetricPoint,
  type MetricsMessage,
  type Series,
  Sketch,
  sketchKey,
  SKETCH_MIN_VALUE,
  Writer,
  writeMetricsHeader,
  writePoint,
} from '@apm-sidecar/proto';
import { type Ident, IdentCache, seriesOf, weightOf } from './dogstatsd-ident';
import { type InvalidReason, type MetricType, decimalIn, parseLine } from './dogstatsd-parse';

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

// Read once: the package's re-exports are getters, which would run on every line.
const { Counter: COUNTER, Gauge: GAUGE, Histogram: HISTOGRAM } = MetricKind;
const MIN_VALUE = SKETCH_MIN_VALUE;
const keyOf = sketchKey;

const DEFAULT_MAX_SERIES = 100_000;
/** Members remembered per set per interval; past it the set's count stops growing and lines are counted. */
const MAX_SET_MEMBERS = 10_000;
/** How far ahead of this clock a `|T` timestamp may be (clients on this host share its clock). */
const MAX_FUTURE_MS = 10 * 60_000;

interface SetState {
  interval: number;
  members: Set<string>;
}

/** One window of points: the current flush window, or the lines stamped with one `|T` second. */
type Window = Map<string, MetricPoint>;

export interface DogStatsdAggregatorOptions {
  /** Series held in the open windows (`max_series`); a line for one more is refused (`series_limit`). */
  maxSeries?: number;
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
  private readonly maxSeries: number;
  private readonly idents: IdentCache;
  /** The values of the line at hand (packed lines have several); reused, never shrunk below one line's count. */
  private readonly vals: number[] = [0];
  private nv = 0;
  /** The identities holding a point of the flush window. */
  private touched: Ident[] = [];

  constructor(private readonly opts: DogStatsdAggregatorOptions = {}) {
    this.maxSeries = opts.maxSeries ?? DEFAULT_MAX_SERIES;
    // As many identities as series: about 0.9 KB each (the key texts, the Series with its tags), the
    // same order as what max_series lets the aggregation hold, and never more than 16 Mi characters.
    this.idents = new IdentCache(this.maxSeries);
  }

  /**
   * One datagram: one or more lines. The datagram is decoded once and its lines are read in place;
   * a metric line whose identity (all but its values) was seen before skips the parser (see
   * dogstatsd-ident.ts); every other line takes the parser whole.
   */
  packet(buf: Buffer): void {
    this.counts.packets++;
    const s = buf.toString('utf8');
    const n = s.length;
    let i = 0;
    while (i <= n) {
      let nl = s.indexOf('\n', i);
      if (nl < 0) nl = n;
      // Clients on Windows end lines with \r\n; a trailing \r is not part of the last field.
      const end = nl > i && s.charCodeAt(nl - 1) === 13 ? nl - 1 : nl;
      if (end > i) this.lineIn(s, i, end);
      i = nl + 1;
    }
  }

  line(line: string): void {
    if (line.length > 0) this.lineIn(line, 0, line.length);
  }

  /** The line s[start, end). */
  private lineIn(s: string, start: number, end: number): void {
    this.counts.lines++;
    const bar = s.indexOf('|', start);
    const colon = s.indexOf(':', start);
    const special = s.charCodeAt(start) === 95 && (s.startsWith('_e{', start) || s.startsWith('_sc|', start));
    // No '|', or no ':' before it: the parser says why (no_type); events and service checks are its own.
    if (special || bar < 0 || bar >= end || colon < 0 || colon > bar) return this.parsed(start === 0 && end === s.length ? s : s.slice(start, end));
    const id = this.idents.lookup(s, start, colon, bar, end);
    if (id === null) return this.parsed(s.slice(start, end));
    if (id.reason !== null && id.early) return this.invalid(id.reason, s, start, end);
    let member = '';
    if (id.type === 's') {
      if (colon + 1 === bar) return this.invalid('bad_value', s, start, end);
      member = s.slice(colon + 1, bar);
    } else {
      // Packed values (protocol 1.1): v1:v2:… between the name's ':' and the first '|'.
      const vals = this.vals;
      let nv = 0;
      let a = colon + 1;
      for (;;) {
        let c = s.indexOf(':', a);
        if (c < 0 || c > bar) c = bar;
        const v = decimalIn(s, a, c);
        if (Number.isNaN(v)) return this.invalid('bad_value', s, start, end);
        vals[nv++] = v;
        if (c === bar) break;
        a = c + 1;
      }
      this.nv = nv;
    }
    if (id.reason !== null) return this.invalid(id.reason, s, start, end);
    this.accumulate(this.window, id, id.series as Series, id.type, id.rate, id.weight, member, s, start, end);
  }

  /** A line through the parser: events, service checks, `|T` lines, and what the identity path leaves. */
  private parsed(line: string): void {
    const p = parseLine(line);
    if (p.kind === 'invalid') return this.invalid(p.reason, line, 0, line.length);
    if (p.kind === 'event') {
      if (p.event.type === 'dogstatsd.service_check') this.counts.serviceChecks++;
      else this.counts.events++;
      this.opts.onEvent?.(p.event);
      return;
    }
    // A point stamped far ahead would hold its interval open (and memory) until that time comes.
    if (p.ts !== null && p.ts > Date.now() + MAX_FUTURE_MS) return this.invalid('bad_timestamp', line, 0, line.length);
    const vals = this.vals;
    for (let i = 0; i < p.values.length; i++) vals[i] = p.values[i] as number;
    this.nv = p.values.length;
    const w = p.ts === null ? this.window : this.stampedWindow(p.ts);
    this.accumulate(w, null, seriesOf(p), p.type, p.rate, weightOf(p.rate), p.member, line, 0, line.length);
  }

  /** The values in `vals[0, nv)` (or the set `member`) into the series' point of window `w`. */
  private accumulate(
    w: Window,
    id: Ident | null,
    series: Series,
    type: MetricType,
    rate: number,
    weight: number,
    member: string,
    s: string,
    start: number,
    end: number,
  ): void {
    const key = series.key;
    const kind = series.kind;
    // `id` (lines of the flush window read by identity) remembers the point its series has there.
    let a = id?.point ?? w.get(key);
    if (a === undefined && this.held >= this.maxSeries) return this.invalid('series_limit', s, start, end);
    if (type === 's' && !this.addMember(key, member)) return this.invalid('set_limit', s, start, end);
    if (a === undefined) {
      a = {
        series,
        count: 0,
        sum: 0,
        min: Number.POSITIVE_INFINITY,
        max: Number.NEGATIVE_INFINITY,
        last: Number.NaN,
        sketch: kind === HISTOGRAM ? new Sketch() : null,
      };
      w.set(key, a);
      this.held++;
    }
    if (id !== null && id.point === null) {
      id.point = a;
      this.touched.push(id);
    }
    if (type === 's') {
      this.setKeys.add(key);
      this.counts.metrics++;
      return;
    }
    const vals = this.vals;
    const nv = this.nv;
    const counter = kind === COUNTER;
    // Summed in the order the values came, as one would add them up by hand.
    let total = 0;
    for (let i = 0; i < nv; i++) total += counter ? (vals[i] as number) / rate : (vals[i] as number) * weight;
    if (!Number.isFinite(a.sum + total)) return this.invalid('overflow', s, start, end);
    for (let i = 0; i < nv; i++) {
      const v = vals[i] as number;
      if (a.sketch !== null) addWeighted(a.sketch, v, weight);
      else a.count++;
      const seen = counter ? v / rate : v;
      if (seen < a.min) a.min = seen;
      if (seen > a.max) a.max = seen;
      if (kind === GAUGE) a.last = v;
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
    // The identities forget the window's points, which go with the messages (and are not kept alive by them).
    for (const id of this.touched) id.point = null;
    this.touched = [];
    return out;
  }

  /** The line s[start, end) refused. */
  private invalid(reason: InvalidReason, s: string, start: number, end: number): void {
    if (this.counts.invalidByReason[reason] === undefined) this.opts.onFirstInvalid?.(reason, s.slice(start, end));
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
  if (v > MIN_VALUE) s.pos.add(keyOf(v), n);
  else if (v < -MIN_VALUE) s.neg.add(keyOf(-v), n);
  else s.zero += n;
}

/**
 * encodeMetrics for the aggregator's messages, each series written from its key instead of encoded
 * again: a DogStatsD series' key is the latin1 image of its encoding (seriesOf in
 * dogstatsd-ident.ts), so the bytes are the same, without sorting and writing every series' tags at
 * every flush.
 */
export function encodeDogStatsdMetrics(m: MetricsMessage): Buffer {
  const w = new Writer(1024);
  writeMetricsHeader(w, m.seq, m.ts, m.windowMs, m.points.length);
  for (const p of m.points) writePoint(w, Buffer.from(p.series.key, 'latin1'), p.count, p.sum, p.min, p.max, p.last, p.sketch);
  return w.frame(MessageType.Metrics);
}
