import { MetricKind, type MetricKindCode, type MetricPoint, type Series, encodeSeries, seriesKey } from '@apm-sidecar/proto';
import { type InvalidReason, type MetricType, type ParsedMetric, parseLine } from './dogstatsd-parse';

/**
 * What a metric line says besides its values (name, type, sample rate, tags, container id) is the
 * same on every line a client sends for one series: only the values change. So the parser runs once
 * per distinct identity text, the line with its values cut out (`<name>` + `|<type>[|@rate][|#tags]…`),
 * and its result is kept: the next line of that series costs a map lookup, not a tag parse, a sort
 * and an encoding of the series.
 *
 * The result is the slow parser's own (parseLine on `<name>:1<tail>`), so both paths accept and refuse
 * the same lines. Refusals keep their order: a bad name or type comes before the values
 * (`early`), a bad sample rate or tag after them (so a bad value on such a line is still `bad_value`).
 * Lines with a `|T` field are not handled here (their identity text changes every second).
 */
export interface Ident {
  /** Null when the identity is valid. */
  reason: InvalidReason | null;
  /** The refusal comes before the values are looked at. */
  early: boolean;
  type: MetricType;
  kind: MetricKindCode;
  /** 1 for gauges and sets. */
  rate: number;
  /** round(1 / rate), bounded: how many values one sampled histogram value stands for. */
  weight: number;
  series: Series | null;
  /** The series' point in the flush window, once a line put it there; cleared when the window is taken. */
  point: MetricPoint | null;
}

const KIND: Record<MetricType, MetricKindCode> = {
  c: MetricKind.Counter,
  g: MetricKind.Gauge,
  ms: MetricKind.Histogram,
  h: MetricKind.Histogram,
  d: MetricKind.Histogram,
  s: MetricKind.Gauge,
};
/** A weight above this would make one sampled value outweigh a whole window's traffic. */
export const MAX_WEIGHT = 1_000_000;

export function weightOf(rate: number): number {
  return Math.min(MAX_WEIGHT, Math.max(1, Math.round(1 / rate)));
}

/** The series of a parsed metric line, with its key (the latin1 image of its encoding). */
export function seriesOf(p: ParsedMetric): Series {
  const kind = KIND[p.type];
  return { key: seriesKey(encodeSeries(kind, p.name, p.tags)), kind, name: p.name, tags: p.tags };
}

/** The identity of `<name>` + `<tail>` (tail: from the first '|' of the line); null for lines with a `|T` field. */
export function identOf(name: string, tail: string): Ident | null {
  if (tail.includes('|T')) return null;
  const p = parseLine(`${name}:1${tail}`);
  if (p.kind === 'event') return null;
  if (p.kind === 'invalid') {
    const early = p.reason === 'bad_name' || p.reason === 'bad_type' || p.reason === 'no_type';
    // A later refusal comes after a valid type, which says how the values are checked (a set's are not numbers).
    const bar = tail.indexOf('|', 1);
    const type = (early ? 'c' : tail.slice(1, bar < 0 ? tail.length : bar)) as MetricType;
    return { reason: p.reason, early, type, kind: KIND[type], rate: 1, weight: 1, series: null, point: null };
  }
  return { reason: null, early: false, type: p.type, kind: KIND[p.type], rate: p.rate, weight: weightOf(p.rate), series: seriesOf(p), point: null };
}

/** A string of its own: a slice may share (and keep alive) the whole datagram it was cut from. */
const own = (s: string): string => JSON.parse(JSON.stringify(s)) as string;

/**
 * The identities seen lately, bounded in entries (`maxEntries`) and in the characters of their texts
 * (`maxChars`): past either, the cache starts afresh, so a client inventing a new series on every
 * line costs a parse per line, as it did before the cache, and no more memory than the bound.
 * Identities longer than `maxKeyChars` are never kept.
 */
export class IdentCache {
  /**
   * Tail → identity, or tail → name → identity once several names share a tail (one tag set on
   * many metrics). A lone identity is checked by comparing its name in place, without hashing it.
   * Keys are slices of the datagram at lookup, copies once kept.
   */
  private readonly map = new Map<string, Kept | Map<string, Kept>>();
  private entries = 0;
  private chars = 0;

  constructor(
    private readonly maxEntries: number,
    private readonly maxChars = 16 * 1024 * 1024,
    private readonly maxKeyChars = 2048,
  ) {}

  get size(): number {
    return this.entries;
  }

  /** The identity of the line `s[start, end)` whose first ':' is at `colon` and first '|' at `bar` (colon < bar). */
  lookup(s: string, start: number, colon: number, bar: number, end: number): Ident | null {
    const tail = s.slice(bar, end);
    let v = this.map.get(tail);
    if (v !== undefined) {
      if (v instanceof Map) {
        const hit = v.get(s.slice(start, colon));
        if (hit !== undefined) return hit.id;
      } else if (v.name.length === colon - start && s.startsWith(v.name, start)) {
        return v.id;
      }
    }
    const name = s.slice(start, colon);
    const id = identOf(name, tail);
    if (id === null) return null;
    const chars = name.length + tail.length;
    if (chars > this.maxKeyChars) return id;
    if (this.entries >= this.maxEntries || this.chars + chars > this.maxChars) {
      this.map.clear();
      this.entries = 0;
      this.chars = 0;
      v = undefined;
    }
    const kept: Kept = { name: own(name), id };
    if (v === undefined) {
      this.map.set(own(tail), kept);
    } else if (v instanceof Map) {
      v.set(kept.name, kept);
    } else {
      // A second name for this tail. set() on a key already there keeps the key (the copy) it has.
      this.map.set(
        tail,
        new Map([
          [v.name, v],
          [kept.name, kept],
        ]),
      );
    }
    this.entries++;
    this.chars += chars;
    return id;
  }
}

/** An identity kept, with its name (a copy) to check a line against. */
interface Kept {
  name: string;
  id: Ident;
}
