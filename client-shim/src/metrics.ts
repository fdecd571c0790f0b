import { LIMITS, MetricKind, type MetricKindCode, SketchRecorder, type Tags, type Writer, encodeSeries, writePoint } from '@apm-sidecar/proto';

/**
 * Bound metric handles, aggregated in-process between flushes.
 *
 * A handle is created once per series (name + sorted tags) and keeps the
 * encoded series bytes, so a flush copies bytes instead of re-encoding names.
 * Recording touches only the handle's own fields; the first record after a
 * flush puts the handle on the dirty list, so a flush visits only what changed.
 */
export interface DropSink {
  drop(reason: string, n?: number): void;
}

export interface Counter {
  add(n?: number): void;
}
export interface Gauge {
  set(v: number): void;
}
export interface Histogram {
  record(v: number): void;
}

abstract class Handle {
  dirty = false;
  count = 0;
  sum = 0;
  min = Number.POSITIVE_INFINITY;
  max = Number.NEGATIVE_INFINITY;

  constructor(
    protected readonly reg: MetricRegistry,
    readonly series: Buffer,
  ) {}

  protected touch(): void {
    this.dirty = true;
    this.reg.dirty.push(this);
  }

  abstract write(w: Writer): void;

  reset(): void {
    this.dirty = false;
    this.count = 0;
    this.sum = 0;
    this.min = Number.POSITIVE_INFINITY;
    this.max = Number.NEGATIVE_INFINITY;
  }
}

/**
 * The sidecar rejects a point whose sum is not finite, and a rejected durable
 * frame would be resent forever: a value that would overflow the sum is
 * dropped (counted as 'overflow') instead.
 */
function overflows(sum: number, v: number): boolean {
  const s = sum + v;
  return s - s !== 0;
}

export class CounterHandle extends Handle implements Counter {
  add(n = 1): void {
    if (typeof n !== 'number' || n - n !== 0 || n < 0) {
      this.reg.sink.drop('invalid');
      return;
    }
    if (overflows(this.sum, n)) {
      this.reg.sink.drop('overflow');
      return;
    }
    this.count++;
    this.sum += n;
    if (n < this.min) this.min = n;
    if (n > this.max) this.max = n;
    if (!this.dirty) this.touch();
  }

  write(w: Writer): void {
    writePoint(w, this.series, this.count, this.sum, this.min, this.max, Number.NaN, null);
  }
}

export class GaugeHandle extends Handle implements Gauge {
  last = 0;

  set(v: number): void {
    if (typeof v !== 'number' || v - v !== 0) {
      this.reg.sink.drop('invalid');
      return;
    }
    if (overflows(this.sum, v)) {
      this.reg.sink.drop('overflow');
      return;
    }
    this.count++;
    this.sum += v;
    this.last = v;
    if (v < this.min) this.min = v;
    if (v > this.max) this.max = v;
    if (!this.dirty) this.touch();
  }

  write(w: Writer): void {
    writePoint(w, this.series, this.count, this.sum, this.min, this.max, this.last, null);
  }
}

export class HistogramHandle extends Handle implements Histogram {
  private readonly sketch = new SketchRecorder();

  record(v: number): void {
    // v - v is 0 only for finite numbers (NaN and ±Infinity give NaN).
    if (typeof v !== 'number' || v - v !== 0) {
      this.reg.sink.drop('invalid');
      return;
    }
    if (overflows(this.sketch.sum, v)) {
      this.reg.sink.drop('overflow');
      return;
    }
    this.sketch.add(v);
    if (!this.dirty) this.touch();
  }

  override write(w: Writer): void {
    const s = this.sketch;
    writePoint(w, this.series, s.count, s.sum, s.min, s.max, Number.NaN, s);
  }

  override reset(): void {
    super.reset();
    this.sketch.clear();
  }
}

/** Returned for bad names/tags or past the series limit: every call is a counted drop. */
export class DroppingHandle implements Counter, Gauge, Histogram {
  constructor(
    private readonly sink: DropSink,
    private readonly reason: string,
  ) {}
  add(): void {
    this.sink.drop(this.reason);
  }
  set(): void {
    this.sink.drop(this.reason);
  }
  record(): void {
    this.sink.drop(this.reason);
  }
}

function validTags(tags: unknown): Tags | undefined | null {
  if (tags === undefined || tags === null) return undefined;
  if (typeof tags !== 'object' || Array.isArray(tags)) return null;
  const out: Tags = {};
  let n = 0;
  for (const [k, v] of Object.entries(tags as Record<string, unknown>)) {
    if (v === undefined) continue;
    const t = typeof v;
    if (t !== 'string' && t !== 'number' && t !== 'boolean') return null;
    const s = String(v);
    if (k.length === 0 || k.length > LIMITS.tagBytes || Buffer.byteLength(s) > LIMITS.tagBytes) return null;
    if (++n > LIMITS.tagCount) return null;
    // Not `out[k] = s`: for k = '__proto__' that would call the prototype setter and lose the tag.
    Object.defineProperty(out, k, { value: s, enumerable: true, writable: true, configurable: true });
  }
  return out;
}

function withApp(tags: Tags | undefined, app: string): Tags | undefined {
  if (tags !== undefined && (Object.hasOwn(tags, 'app') || Object.keys(tags).length >= LIMITS.tagCount)) return tags;
  if (Buffer.byteLength(app) > LIMITS.tagBytes) return tags;
  return { ...tags, app };
}

function mapKey(kind: number, name: string, tags: Tags | undefined): string {
  let key = `${kind}\u0000${name}`;
  if (tags !== undefined) {
    const keys = Object.keys(tags);
    // Most call sites pass zero or one tag: no sort needed then.
    if (keys.length > 1) keys.sort();
    for (const k of keys) key += `\u0000${k}\u0000${tags[k]}`;
  }
  return key;
}

export class MetricRegistry {
  readonly dirty: Handle[] = [];
  private readonly handles = new Map<string, Handle>();

  constructor(
    readonly sink: DropSink,
    private readonly maxSeries: number,
    /** The app's name, sent as the tag `app` of every series that does not set it: two apps behind one sidecar stay two series. */
    private readonly app: string,
  ) {}

  get seriesCount(): number {
    return this.handles.size;
  }

  get(kind: MetricKindCode, name: unknown, rawTags: unknown): Counter | Gauge | Histogram {
    if (typeof name !== 'string' || name.length === 0 || Buffer.byteLength(name) > LIMITS.nameBytes) {
      return new DroppingHandle(this.sink, 'invalid');
    }
    const tags = validTags(rawTags);
    if (tags === null) return new DroppingHandle(this.sink, 'invalid');
    const key = mapKey(kind, name, tags);
    const found = this.handles.get(key);
    if (found !== undefined) return found as CounterHandle | GaugeHandle | HistogramHandle;
    if (this.handles.size >= this.maxSeries) return new DroppingHandle(this.sink, 'series_limit');
    const bytes = encodeSeries(kind, name, withApp(tags, this.app));
    const h =
      kind === MetricKind.Counter
        ? new CounterHandle(this, bytes)
        : kind === MetricKind.Gauge
          ? new GaugeHandle(this, bytes)
          : new HistogramHandle(this, bytes);
    this.handles.set(key, h);
    return h;
  }

  /** Take the dirty handles (and reset the list); the caller writes then resets each. */
  takeDirty(): Handle[] {
    return this.dirty.splice(0, this.dirty.length);
  }
}

/**
 * Write the handles' points into `body` and hand them to `emit` in runs of at most `limit`
 * bytes (a run always holds at least one point); each handle is reset once written.
 */
export function packPoints(handles: Handle[], body: Writer, limit: number, emit: (n: number, points: Buffer) => void): void {
  let n = 0;
  for (const h of handles) {
    const before = body.length;
    h.write(body);
    h.reset();
    n++;
    if (body.length >= limit && n > 1) {
      // This point pushed the run over: emit what came before it, keep it for the next.
      const all = body.body();
      emit(n - 1, all.subarray(0, before));
      body.bytes(all.subarray(before));
      n = 1;
    }
  }
  if (n > 0) emit(n, body.body());
}

export type { Handle };
