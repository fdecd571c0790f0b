import { Reader, Writer } from '../buffer';
import { MalformedMessageError } from '../errors';
import { Sketch, type SketchRecorder } from '../sketch';
import { skipBuckets } from '../sketch-bytes';
import { LIMITS, MessageType } from './types';

// Metrics (binary, durable).
//
//   payload := seq u48 | ts f64 (window start, epoch ms) | windowMs varint | n varint | point × n
//   point   := seriesLen varint | series | count varint | sum f64 | min f64 | max f64
//              | last f64            (gauge only)
//              | sketch buckets      (histogram only)
//   series  := kind u8 | name str | tagCount varint | (key str | value str) × tagCount   (keys sorted)
//
// The series bytes are produced once per handle and copied on every flush; the
// receiver uses their latin1 image as a map key, so it parses a series only the
// first time it sees it.

export const MetricKind = { Counter: 0, Gauge: 1, Histogram: 2 } as const;
export type MetricKindCode = (typeof MetricKind)[keyof typeof MetricKind];
export const METRIC_KIND_NAMES = ['counter', 'gauge', 'histogram'] as const;
export type MetricKindName = (typeof METRIC_KIND_NAMES)[number];

export type Tags = Record<string, string>;

export interface Series {
  /** Unique per (kind, name, sorted tags): the latin1 image of the series bytes. */
  key: string;
  kind: MetricKindCode;
  name: string;
  tags: Tags;
}

export interface MetricPoint {
  series: Series;
  count: number;
  sum: number;
  min: number;
  max: number;
  /** Gauges: the last value set; NaN otherwise. */
  last: number;
  /** Histograms: the distribution; null otherwise. */
  sketch: Sketch | null;
  /**
   * Histograms decoded with `keepSketchBytes`: the sketch's buckets as received
   * (Sketch.encodeBuckets bytes, checked; a view into the decoded buffer). `sketch`
   * is then built from them only when read.
   */
  readonly sketchBytes?: Buffer;
}

/**
 * A point decoded with `keepSketchBytes`: a histogram holds its sketch as the checked bytes
 * it arrived in, and builds the Sketch only when `sketch` is first read. Every point of such
 * a decode is one of these (one object shape for the receiver's loops).
 */
class ReceivedPoint implements MetricPoint {
  private built: Sketch | null = null;

  constructor(
    readonly series: Series,
    readonly count: number,
    readonly sum: number,
    readonly min: number,
    readonly max: number,
    readonly last: number,
    readonly sketchBytes: Buffer | undefined,
  ) {}

  get sketch(): Sketch | null {
    if (this.built === null && this.sketchBytes !== undefined) {
      const s = new Sketch();
      s.decodeBuckets(new Reader(this.sketchBytes));
      s.count = this.count;
      s.sum = this.sum;
      s.min = this.min;
      s.max = this.max;
      this.built = s;
    }
    return this.built;
  }

  set sketch(s: Sketch | null) {
    this.built = s;
  }
}

export interface MetricsMessage {
  seq: number;
  ts: number;
  windowMs: number;
  points: MetricPoint[];
}

/** Sort tags by key. Tag values are strings; callers stringify. */
export function sortedTagEntries(tags: Tags | undefined): [string, string][] {
  if (tags === undefined) return [];
  return Object.entries(tags).sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
}

export function encodeSeries(kind: MetricKindCode, name: string, tags: Tags | undefined): Buffer {
  const w = new Writer(64);
  w.u8(kind).str(name);
  const entries = sortedTagEntries(tags);
  w.varint(entries.length);
  for (const [k, v] of entries) w.str(k).str(v);
  return w.body();
}

export function seriesKey(seriesBytes: Buffer): string {
  return seriesBytes.toString('latin1');
}

function decodeSeriesBody(view: Buffer, key: string): Series {
  const r = new Reader(view);
  const kind = r.u8();
  if (kind > 2) throw new MalformedMessageError(`unknown metric kind ${kind}`);
  const name = r.str();
  if (name.length === 0 || Buffer.byteLength(name) > LIMITS.nameBytes) throw new MalformedMessageError('metric name empty or too long');
  const n = r.varint();
  if (n > LIMITS.tagCount) throw new MalformedMessageError(`metric has ${n} tags, limit ${LIMITS.tagCount}`);
  const tags: Tags = {};
  let prev = '';
  for (let i = 0; i < n; i++) {
    const k = r.str();
    const v = r.str();
    if (k.length === 0 || k.length > LIMITS.tagBytes || v.length > LIMITS.tagBytes) throw new MalformedMessageError('tag key empty or tag too long');
    if (i > 0 && k <= prev) throw new MalformedMessageError('tag keys not sorted or duplicated');
    prev = k;
    // Not `tags[k] = v`: for k = '__proto__' that would call the prototype setter and drop the tag.
    Object.defineProperty(tags, k, { value: v, enumerable: true, writable: true, configurable: true });
  }
  r.expectEnd('series');
  return { key, kind: kind as MetricKindCode, name, tags };
}

export function writeMetricsHeader(w: Writer, seq: number, ts: number, windowMs: number, n: number): void {
  w.u48(seq).f64(ts).varint(windowMs).varint(n);
}

/** Write one point; `last` is used for gauges, `sketch` for histograms. */
export function writePoint(
  w: Writer,
  seriesBytes: Buffer,
  count: number,
  sum: number,
  min: number,
  max: number,
  last: number,
  sketch: SketchRecorder | null,
): void {
  w.varint(seriesBytes.length).bytes(seriesBytes).varint(count).f64(sum).f64(min).f64(max);
  const kind = seriesBytes[0];
  if (kind === MetricKind.Gauge) w.f64(last);
  else if (kind === MetricKind.Histogram) (sketch as SketchRecorder).encodeBuckets(w);
}

export function encodeMetrics(m: MetricsMessage, w = new Writer(1024)): Buffer {
  writeMetricsHeader(w, m.seq, m.ts, m.windowMs, m.points.length);
  for (const p of m.points) {
    const bytes = encodeSeries(p.series.kind, p.series.name, p.series.tags);
    writePoint(w, bytes, p.count, p.sum, p.min, p.max, p.last, p.sketch);
  }
  return w.frame(MessageType.Metrics);
}

/**
 * Read one point written by writePoint. `keepSketchBytes`: a histogram's buckets are
 * checked and kept as bytes (MetricPoint.sketchBytes) rather than built into a Sketch
 * (for a receiver that stores them as they came).
 */
export function readPoint(r: Reader, seriesCache?: Map<string, Series>, keepSketchBytes = false): MetricPoint {
  const slen = r.varint();
  if (slen === 0) throw new MalformedMessageError('empty series');
  if (slen > r.remaining) throw new MalformedMessageError('truncated bytes');
  // The key straight from the buffer: a view is only needed to parse a series not seen before.
  const key = r.buf.toString('latin1', r.pos, r.pos + slen);
  let series = seriesCache?.get(key);
  if (series === undefined) {
    series = decodeSeriesBody(r.buf.subarray(r.pos, r.pos + slen), key);
    seriesCache?.set(key, series);
  }
  r.pos += slen;
  const count = r.varint();
  const sum = r.f64();
  const min = r.f64();
  const max = r.f64();
  if (!Number.isFinite(sum) || (count > 0 && (!Number.isFinite(min) || !Number.isFinite(max) || min > max))) {
    throw new MalformedMessageError('point statistics are not finite or min > max');
  }
  let last = Number.NaN;
  let sketch: Sketch | null = null;
  if (series.kind === MetricKind.Gauge) {
    last = r.f64();
    if (!Number.isFinite(last)) throw new MalformedMessageError('gauge value is not finite');
  } else if (series.kind === MetricKind.Histogram && keepSketchBytes) {
    const at = r.pos;
    const total = skipBuckets(r);
    if (total !== count) throw new MalformedMessageError(`sketch holds ${total} values, point says ${count}`);
    return new ReceivedPoint(series, count, sum, min, max, last, r.buf.subarray(at, r.pos));
  } else if (series.kind === MetricKind.Histogram) {
    sketch = new Sketch();
    const total = sketch.decodeBuckets(r);
    if (total !== count) throw new MalformedMessageError(`sketch holds ${total} values, point says ${count}`);
    sketch.count = count;
    sketch.sum = sum;
    sketch.min = min;
    sketch.max = max;
  }
  if (keepSketchBytes) return new ReceivedPoint(series, count, sum, min, max, last, undefined);
  return { series, count, sum, min, max, last, sketch };
}

/**
 * Decode a metrics payload. `seriesCache` (optional, owned by the caller) maps
 * series keys to parsed series so repeated series are not re-parsed; the caller
 * bounds its size.
 */
export function decodeMetrics(p: Buffer, seriesCache?: Map<string, Series>): MetricsMessage {
  const r = new Reader(p);
  const seq = r.u48();
  const ts = r.f64();
  if (!Number.isFinite(ts) || ts < 0) throw new MalformedMessageError('metrics.ts must be a non-negative finite number');
  const windowMs = r.varint();
  const n = r.varint();
  if (n > LIMITS.pointsPerFrame || n > r.remaining) throw new MalformedMessageError(`metrics declares ${n} points`);
  const points: MetricPoint[] = [];
  for (let i = 0; i < n; i++) points.push(readPoint(r, seriesCache));
  r.expectEnd('metrics');
  return { seq, ts, windowMs, points };
}
