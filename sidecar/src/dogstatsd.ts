import { LIMITS, MetricKind, type MetricKindCode, type MetricPoint, type MetricsMessage, Sketch, encodeSeries, seriesKey } from '@apm-sidecar/proto';

/**
 * DogStatsD / StatsD lines fed into the same aggregation as the shims:
 *
 *   <name>:<value>|<type>[|@<sample rate>][|#<tag>[:<value>],...][|<other fields>]
 *
 *   c  counter (value divided by the sample rate)     g  gauge
 *   ms, h, d  histogram / timing / distribution       s  set, _e{ events, _sc service checks: not supported (counted)
 *
 * Lines are aggregated for one flush_ms window, then handed over as one
 * metrics message, like a shim's flush.
 */
export interface DogStatsdCounts {
  packets: number;
  lines: number;
  invalid: number;
  unsupported: number;
}

const TYPES: Record<string, MetricKindCode> = {
  c: MetricKind.Counter,
  g: MetricKind.Gauge,
  ms: MetricKind.Histogram,
  h: MetricKind.Histogram,
  d: MetricKind.Histogram,
};
const MAX_SERIES = 100_000;

export class DogStatsdAggregator {
  private series = new Map<string, MetricPoint>();
  private windowStart = Date.now();
  readonly counts: DogStatsdCounts = { packets: 0, lines: 0, invalid: 0, unsupported: 0 };

  /** One datagram: one or more lines. */
  packet(buf: Buffer): void {
    this.counts.packets++;
    for (const line of buf.toString('utf8').split('\n')) {
      if (line.length > 0) this.line(line);
    }
  }

  line(line: string): void {
    this.counts.lines++;
    if (line.startsWith('_e{') || line.startsWith('_sc|')) {
      this.counts.unsupported++;
      return;
    }
    const fields = line.split('|');
    const head = fields[0] as string;
    const colon = head.lastIndexOf(':');
    const typeField = fields[1];
    if (colon <= 0 || typeField === undefined) {
      this.counts.invalid++;
      return;
    }
    const name = head.slice(0, colon);
    const value = Number(head.slice(colon + 1));
    if (typeField === 's') {
      this.counts.unsupported++;
      return;
    }
    const kind = TYPES[typeField];
    if (kind === undefined || !Number.isFinite(value) || Buffer.byteLength(name) > LIMITS.nameBytes) {
      this.counts.invalid++;
      return;
    }
    let rate = 1;
    const tags: Record<string, string> = {};
    for (let i = 2; i < fields.length; i++) {
      const f = fields[i] as string;
      if (f.startsWith('@')) {
        rate = Number(f.slice(1));
        if (!(rate > 0 && rate <= 1)) {
          this.counts.invalid++;
          return;
        }
      } else if (f.startsWith('#')) {
        for (const t of f.slice(1).split(',')) {
          if (t.length === 0) continue;
          const c = t.indexOf(':');
          const k = c < 0 ? t : t.slice(0, c);
          const v = c < 0 ? '' : t.slice(c + 1);
          if (k.length === 0 || k.length > LIMITS.tagBytes || v.length > LIMITS.tagBytes) {
            this.counts.invalid++;
            return;
          }
          Object.defineProperty(tags, k, { value: v, enumerable: true, writable: true, configurable: true });
        }
      }
    }
    if (Object.keys(tags).length > LIMITS.tagCount) {
      this.counts.invalid++;
      return;
    }
    const bytes = encodeSeries(kind, name, tags);
    const key = seriesKey(bytes);
    let a = this.series.get(key);
    if (a === undefined) {
      if (this.series.size >= MAX_SERIES) {
        this.counts.invalid++;
        return;
      }
      a = {
        series: { key, kind, name, tags },
        count: 0,
        sum: 0,
        min: Number.POSITIVE_INFINITY,
        max: Number.NEGATIVE_INFINITY,
        last: Number.NaN,
        sketch: kind === MetricKind.Histogram ? new Sketch() : null,
      };
      this.series.set(key, a);
    }
    const v = kind === MetricKind.Counter ? value / rate : value;
    if (!Number.isFinite(a.sum + v)) {
      this.counts.invalid++;
      return;
    }
    if (a.sketch !== null) {
      a.sketch.add(v);
      a.count = a.sketch.count;
    } else {
      a.count++;
    }
    a.sum += v;
    if (v < a.min) a.min = v;
    if (v > a.max) a.max = v;
    if (kind === MetricKind.Gauge) a.last = v;
  }

  /** The window so far as a metrics message (seq given by the caller), or null when empty. */
  take(seq: number, now: number): MetricsMessage | null {
    const ts = this.windowStart;
    this.windowStart = now;
    if (this.series.size === 0) return null;
    const points = [...this.series.values()];
    this.series = new Map();
    return { seq, ts, windowMs: Math.max(0, now - ts), points };
  }
}
