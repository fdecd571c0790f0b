import { type BucketStore, MalformedMessageError, Reader, type Sketch, type Writer } from '@apm-sidecar/proto';

/**
 * A stored sketch (Sketch.encodeBuckets bytes) merged with a batch's sketch, computed on the
 * bytes: the same bytes as decoding the stored one into a Sketch, merging and encoding again
 * (metric-table.ts), without building the Sketch (its bucket arrays are most of a row's
 * allocations when a minute rollup is merged again every few seconds).
 *
 *   zero varint | positive store | negative store      store := n varint | zigzag(lo) | n × count varint
 *
 * A store's range after the merge is from its lowest to its highest non-zero bucket, as
 * BucketStore keeps it (decoding skips zero counts, merging ignores zero ends).
 */

/** Scratch for one stored bucket range (grown as needed, reused). */
let scratch = new Float64Array(256);

function writeMerged(r: Reader, add: BucketStore, w: Writer): void {
  const n = r.varint();
  let lo = 0;
  let first = Number.POSITIVE_INFINITY;
  let last = Number.NEGATIVE_INFINITY;
  if (n > 0) {
    if (n > r.remaining) throw new MalformedMessageError(`stored sketch declares ${n} buckets, ${r.remaining} bytes left`);
    lo = r.zigzag();
    if (scratch.length < n) scratch = new Float64Array(Math.max(n, scratch.length * 2));
    for (let i = 0; i < n; i++) {
      const c = r.varint();
      scratch[i] = c;
      if (c !== 0) {
        if (i + lo < first) first = i + lo;
        last = i + lo;
      }
    }
  }
  // The batch's non-zero range.
  let aLo = add.lo;
  let aHi = add.hi;
  const counts = add.counts;
  const off = add.offset;
  while (aLo <= aHi && counts[aLo - off] === 0) aLo++;
  while (aHi >= aLo && counts[aHi - off] === 0) aHi--;
  const from = Math.min(first, aLo);
  const to = Math.max(last, aHi);
  if (from > to) {
    w.varint(0);
    return;
  }
  w.varint(to - from + 1);
  w.zigzag(from);
  for (let k = from; k <= to; k++) {
    const s = k >= first && k <= last ? (scratch[k - lo] as number) : 0;
    const a = k >= aLo && k <= aHi ? (counts[k - off] as number) : 0;
    w.varint(s + a);
  }
}

/** encodeBuckets(decode(stored) ∪ add), into a copy (the writer is reused). */
export function mergeEncodedSketch(stored: Buffer, add: Sketch, w: Writer): Buffer {
  const r = new Reader(stored);
  w.varint(r.varint() + add.zero);
  writeMerged(r, add.pos, w);
  writeMerged(r, add.neg, w);
  return w.body();
}
