import { MalformedMessageError } from './errors';
import type { Reader, Writer } from './buffer';

/**
 * A mergeable log-bucket quantile sketch (the DDSketch construction).
 *
 * A positive value v falls in bucket k = ceil(log_gamma(v)), which covers
 * (gamma^(k-1), gamma^k]. Answering with 2·gamma^k / (gamma + 1) is within
 * ALPHA of every value in the bucket, so a quantile is within ALPHA relative
 * error of the exact one at the same rank. gamma = (1 + ALPHA) / (1 - ALPHA).
 *
 * Buckets are integer counts, so merging is plain addition: associative and
 * order-independent. Keys are clamped to [MIN_KEY, MAX_KEY], so a sketch never
 * holds more than MAX_KEY - MIN_KEY + 1 buckets per sign (bounded memory).
 * Magnitudes below MIN_VALUE count as zero.
 */
export const SKETCH_ALPHA = 0.0095;
const GAMMA = (1 + SKETCH_ALPHA) / (1 - SKETCH_ALPHA);
const MULTIPLIER = 1 / Math.log(GAMMA);
export const SKETCH_MIN_VALUE = 1e-9;
export const SKETCH_MIN_KEY = Math.ceil(Math.log(SKETCH_MIN_VALUE) * MULTIPLIER);
export const SKETCH_MAX_KEY = Math.ceil(Math.log(1e18) * MULTIPLIER);

export function sketchKey(v: number): number {
  return Math.min(Math.ceil(Math.log(v) * MULTIPLIER), SKETCH_MAX_KEY);
}

export function sketchValue(key: number): number {
  return (2 * GAMMA ** key) / (GAMMA + 1);
}

const EMPTY = new Float64Array(0);

// Each class comes in two halves: what records values and encodes them (all a shim needs),
// and a subclass that also reads, merges and answers quantiles (the sidecar and the collector).
// A bundle of the shim then holds only the first.

/** Dense counts for a contiguous key range, growing by doubling: adding and encoding. */
export class BucketRecorder {
  counts: Float64Array = EMPTY;
  offset = 0;
  lo = Number.POSITIVE_INFINITY;
  hi = Number.NEGATIVE_INFINITY;

  get empty(): boolean {
    return this.lo > this.hi;
  }

  add(key: number, n: number): void {
    let i = key - this.offset;
    if (i < 0 || i >= this.counts.length) {
      this.reserve(key, key);
      i = key - this.offset;
    }
    this.counts[i] += n;
    if (key < this.lo) this.lo = key;
    if (key > this.hi) this.hi = key;
  }

  /** Make room for keys [lo, hi] as well as the ones held, with at most one allocation. */
  protected reserve(lo: number, hi: number): void {
    if (lo - this.offset >= 0 && hi - this.offset < this.counts.length) return;
    lo = Math.min(this.lo, lo);
    hi = Math.max(this.hi, hi);
    const used = hi - lo + 1;
    let size = Math.max(this.counts.length * 2, 64);
    while (size < used) size *= 2;
    size = Math.min(size, SKETCH_MAX_KEY - SKETCH_MIN_KEY + 1);
    let offset = lo - ((size - used) >> 1);
    if (offset < SKETCH_MIN_KEY) offset = SKETCH_MIN_KEY;
    if (offset + size - 1 > SKETCH_MAX_KEY) offset = SKETCH_MAX_KEY - size + 1;
    const next = new Float64Array(size);
    if (!this.empty) {
      for (let k = this.lo; k <= this.hi; k++) next[k - offset] = this.counts[k - this.offset] as number;
    }
    this.counts = next;
    this.offset = offset;
  }

  /** Forget the counts, keep the allocation (the shim reuses a handle's store every flush). */
  clear(): void {
    if (!this.empty) this.counts.fill(0, this.lo - this.offset, this.hi - this.offset + 1);
    this.lo = Number.POSITIVE_INFINITY;
    this.hi = Number.NEGATIVE_INFINITY;
  }

  /** n | zigzag(lo) | n × varint(count); n = 0 for an empty store. */
  encode(w: Writer): void {
    if (this.empty) {
      w.varint(0);
      return;
    }
    w.varint(this.hi - this.lo + 1);
    w.zigzag(this.lo);
    for (let k = this.lo; k <= this.hi; k++) w.varint(this.counts[k - this.offset] as number);
  }
}

/** A BucketRecorder that can also be read, merged and decoded into. */
export class BucketStore extends BucketRecorder {
  get(key: number): number {
    const i = key - this.offset;
    return i >= 0 && i < this.counts.length ? (this.counts[i] as number) : 0;
  }

  merge(other: BucketStore): void {
    if (other.empty) return;
    const src = other.counts;
    let lo = other.lo;
    let hi = other.hi;
    // Zero counts at the ends neither extend [lo, hi] nor need room (as adding key by key would).
    while (lo <= hi && src[lo - other.offset] === 0) lo++;
    while (hi > lo && src[hi - other.offset] === 0) hi--;
    if (lo > hi) return;
    // Room for the whole range at once, then a plain element-wise add (this is the
    // sidecar's per-point aggregation cost; growing key by key dominated it).
    this.reserve(lo, hi);
    const dst = this.counts;
    const shift = other.offset - this.offset;
    for (let i = lo - other.offset, end = hi - other.offset; i <= end; i++) dst[i + shift] += src[i] as number;
    if (lo < this.lo) this.lo = lo;
    if (hi > this.hi) this.hi = hi;
  }

  /** Decode into this (empty) store; returns the total count. */
  decode(r: Reader): number {
    const n = r.varint();
    if (n === 0) return 0;
    // Every count takes at least one byte: a declared n larger than what is left is a lie.
    if (n > r.remaining) throw new MalformedMessageError(`sketch declares ${n} buckets, ${r.remaining} bytes left`);
    const lo = r.zigzag();
    if (lo < SKETCH_MIN_KEY || lo + n - 1 > SKETCH_MAX_KEY) throw new MalformedMessageError('sketch key out of range');
    // One allocation for the declared range (validated above) instead of growing as keys arrive.
    this.reserve(lo, lo + n - 1);
    let total = 0;
    for (let k = lo; k < lo + n; k++) {
      const c = r.varint();
      if (c !== 0) {
        this.add(k, c);
        total += c;
      }
    }
    return total;
  }
}

/** count, sum, min, max and the bucket stores of one distribution: adding and encoding. */
export class SketchRecorder {
  count = 0;
  sum = 0;
  min = Number.POSITIVE_INFINITY;
  max = Number.NEGATIVE_INFINITY;
  zero = 0;
  readonly pos: BucketRecorder;
  readonly neg: BucketRecorder;

  constructor(Store: new () => BucketRecorder = BucketRecorder) {
    this.pos = new Store();
    this.neg = new Store();
  }

  /** Caller guarantees v is a finite number. */
  add(v: number): void {
    this.count++;
    this.sum += v;
    if (v < this.min) this.min = v;
    if (v > this.max) this.max = v;
    if (v > SKETCH_MIN_VALUE) this.pos.add(sketchKey(v), 1);
    else if (v < -SKETCH_MIN_VALUE) this.neg.add(sketchKey(-v), 1);
    else this.zero++;
  }

  clear(): void {
    this.count = 0;
    this.sum = 0;
    this.min = Number.POSITIVE_INFINITY;
    this.max = Number.NEGATIVE_INFINITY;
    this.zero = 0;
    this.pos.clear();
    this.neg.clear();
  }

  /** Buckets only: zero | positive store | negative store. count/sum/min/max travel beside it. */
  encodeBuckets(w: Writer): void {
    w.varint(this.zero);
    this.pos.encode(w);
    this.neg.encode(w);
  }
}

/** A sketch that can also be merged, queried and decoded into (the sidecar's and the collector's). */
export class Sketch extends SketchRecorder {
  declare readonly pos: BucketStore;
  declare readonly neg: BucketStore;

  constructor() {
    super(BucketStore);
  }

  merge(o: Sketch): void {
    if (o.count === 0) return;
    this.count += o.count;
    this.sum += o.sum;
    if (o.min < this.min) this.min = o.min;
    if (o.max > this.max) this.max = o.max;
    this.zero += o.zero;
    this.pos.merge(o.pos);
    this.neg.merge(o.neg);
  }

  /**
   * The value at rank q·(count − 1) (lower quantile), within SKETCH_ALPHA of the
   * exact one; NaN when empty. Clamped to [min, max], which only helps.
   */
  quantile(q: number): number {
    if (this.count === 0 || !(q >= 0 && q <= 1)) return Number.NaN;
    const v = this.valueAtRank(q * (this.count - 1));
    return Math.min(Math.max(v, this.min), this.max);
  }

  /** Walk the buckets from the most negative value up to the first whose cumulative count passes `rank`. */
  private valueAtRank(rank: number): number {
    let seen = 0;
    const neg = this.neg;
    for (let k = neg.hi; k >= neg.lo; k--) {
      seen += neg.get(k);
      if (seen > rank) return -sketchValue(k);
    }
    seen += this.zero;
    if (seen > rank) return 0;
    const pos = this.pos;
    for (let k = pos.lo; k <= pos.hi; k++) {
      seen += pos.get(k);
      if (seen > rank) return sketchValue(k);
    }
    return this.max;
  }

  /** Decode buckets written by encodeBuckets; returns the total count they hold. */
  decodeBuckets(r: Reader): number {
    this.zero = r.varint();
    return this.zero + this.pos.decode(r) + this.neg.decode(r);
  }
}
