import { MalformedMessageError, SKETCH_MAX_KEY, SKETCH_MIN_KEY } from '@apm-sidecar/proto';

/**
 * Two sketches' bucket bytes (Sketch.encodeBuckets) merged into one, on the bytes: the same
 * bytes as proto's mergeBucketBytes (and as decoding one, Sketch.merge of the other, encoding),
 * in one pass over both inputs: each store's counts are walked side by side, key by key, and
 * written as they are added, with no bucket array in between.
 *
 *   zero varint | positive store | negative store      store := n varint | zigzag(lo) | n × count varint
 *
 * A store's range after the merge is from its lowest to its highest non-zero bucket, as
 * BucketStore keeps it (decoding skips zero counts, merging ignores zero ends). Bytes that are
 * not a sketch's throw MalformedMessageError, as mergeBucketBytes does.
 */

/** Output scratch, grown as needed; each merge returns a copy. */
let out = Buffer.allocUnsafe(4096);

/** The parse position of the varint reader below (one merge at a time: it never awaits). */
let at = 0;

function truncated(): never {
  throw new MalformedMessageError('sketch bytes: truncated or overlong varint');
}

/** The varint at `at` in `b` (the one-byte case is inlined by the callers). */
function varint(b: Uint8Array): number {
  let v = 0;
  let mul = 1;
  for (;;) {
    if (at >= b.length || mul > 2 ** 56) truncated();
    const x = b[at++] as number;
    v += (x & 0x7f) * mul;
    if (x < 0x80) return v;
    mul *= 0x80;
  }
}

/** Write `v` at `o`; returns the position after it. */
function put(v: number, o: number): number {
  while (v >= 0x80) {
    out[o++] = (v % 0x80) | 0x80;
    v = Math.floor(v / 0x80);
  }
  out[o++] = v;
  return o;
}

function storeHeader(b: Uint8Array): [n: number, lo: number] {
  const n = varint(b);
  if (n === 0) return [0, 0];
  if (n > b.length - at) throw new MalformedMessageError(`sketch bytes: ${n} buckets, ${b.length - at} bytes left`);
  const z = varint(b);
  const lo = z % 2 === 0 ? z / 2 : -(z + 1) / 2;
  if (lo < SKETCH_MIN_KEY || lo + n - 1 > SKETCH_MAX_KEY) throw new MalformedMessageError('sketch bytes: key out of range');
  return [n, lo];
}

/** Room for a store's n and zigzag(lo) varints, written once the merged range is known. */
const HEAD_ROOM = 16;

/** Where the last store merge left the inputs: positions after it in a and b. */
const next = { pa: 0, pb: 0 };

/** Merge the stores at `pa` in `a` and `pb` in `b` into `out` at `o`; returns the position after it in `out` (next: in a, b). */
function mergeStore(a: Uint8Array, pa: number, b: Uint8Array, pb: number, o: number): number {
  at = pa;
  const [na, loA] = storeHeader(a);
  pa = at;
  at = pb;
  const [nb, loB] = storeHeader(b);
  pb = at;
  if (na === 0 && nb === 0) {
    next.pa = pa;
    next.pb = pb;
    out[o] = 0;
    return o + 1;
  }
  const hiA = loA + na - 1;
  const hiB = loB + nb - 1;
  const from = na === 0 ? loB : nb === 0 ? loA : Math.min(loA, loB);
  const to = na === 0 ? hiB : nb === 0 ? hiA : Math.max(hiA, hiB);
  // Each merged count takes at most one byte more than the longer of its two: room for all.
  const need = o + HEAD_ROOM + (a.length - pa) + (b.length - pb) + 2 * (to - from + 1) + 16;
  if (out.length < need) {
    const grown = Buffer.allocUnsafe(Math.max(need, out.length * 2));
    out.copy(grown, 0, 0, o);
    out = grown;
  }
  const dst = out;
  const lenA = a.length;
  const lenB = b.length;
  const countsAt = o + HEAD_ROOM;
  let w = countsAt;
  let end = countsAt;
  let first = 0;
  let last = 0;
  let started = false;
  for (let k = from; k <= to; k++) {
    let c = 0;
    if (k >= loA && k <= hiA) {
      const x = pa < lenA ? (a[pa] as number) : 0x80;
      if (x < 0x80) {
        pa++;
        c = x;
      } else {
        at = pa;
        c = varint(a);
        pa = at;
      }
    }
    if (k >= loB && k <= hiB) {
      const x = pb < lenB ? (b[pb] as number) : 0x80;
      if (x < 0x80) {
        pb++;
        c += x;
      } else {
        at = pb;
        c += varint(b);
        pb = at;
      }
    }
    if (c === 0) {
      if (started) dst[w++] = 0;
      continue;
    }
    if (!started) {
      started = true;
      first = k;
    }
    if (c < 0x80) dst[w++] = c;
    else w = put(c, w);
    last = k;
    end = w;
  }
  next.pa = pa;
  next.pb = pb;
  if (!started) {
    out[o] = 0;
    return o + 1;
  }
  let h = put(last - first + 1, o);
  h = put(first >= 0 ? first * 2 : -first * 2 - 1, h);
  out.copyWithin(h, countsAt, end);
  return h + (end - countsAt);
}

/** The bucket bytes of the merge of two sketches' bucket bytes (a copy). */
export function mergeSketchBytes(a: Uint8Array, b: Uint8Array): Buffer {
  at = 0;
  const zeroA = varint(a);
  const pa = at;
  at = 0;
  const zeroB = varint(b);
  const pb = at;
  let o = put(zeroA + zeroB, 0);
  o = mergeStore(a, pa, b, pb, o);
  o = mergeStore(a, next.pa, b, next.pb, o);
  return Buffer.from(out.subarray(0, o));
}
