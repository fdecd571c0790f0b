import type { Reader } from './buffer';
import { MalformedMessageError } from './errors';
import { SKETCH_MAX_KEY, SKETCH_MIN_KEY } from './sketch';

/**
 * Sketch buckets kept as the bytes Sketch.encodeBuckets writes (zero | positive store |
 * negative store; a store is n | zigzag(lo) | n × varint(count)), checked and merged
 * without building a Sketch. The collector stores the bytes a point arrived with and
 * merges two rows' bytes in SQL: building a Sketch (a 2 KiB bucket array) for every
 * received point only to encode it again cost more than the rest of its decoding.
 */

/** Check the buckets at `r` exactly as Sketch.decodeBuckets does and move past them; returns the total count. */
export function skipBuckets(r: Reader): number {
  const zero = r.varint();
  return zero + skipStore(r) + skipStore(r);
}

function skipStore(r: Reader): number {
  const n = r.varint();
  if (n === 0) return 0;
  if (n > r.remaining) throw new MalformedMessageError(`sketch declares ${n} buckets, ${r.remaining} bytes left`);
  const lo = r.zigzag();
  if (lo < SKETCH_MIN_KEY || lo + n - 1 > SKETCH_MAX_KEY) throw new MalformedMessageError('sketch key out of range');
  const buf = r.buf;
  const end = r.end;
  let pos = r.pos;
  let total = 0;
  for (let i = 0; i < n; i++) {
    // Most counts fit one byte; the rest go through the Reader's checked varint.
    const b = pos < end ? (buf[pos] as number) : 0x80;
    if (b < 0x80) {
      pos++;
      total += b;
    } else {
      r.pos = pos;
      total += r.varint();
      pos = r.pos;
    }
  }
  r.pos = pos;
  return total;
}

const SPAN = SKETCH_MAX_KEY - SKETCH_MIN_KEY + 1;
/** Scratch counts by key − SKETCH_MIN_KEY, one per sign; left all zero between merges. */
const scratchPos = new Float64Array(SPAN);
const scratchNeg = new Float64Array(SPAN);
/** Room for the largest merged sketch: three varints of ≤ 8 bytes, and ≤ 8 bytes per bucket of each sign. */
const out = Buffer.allocUnsafe(8 * (3 + 2 * SPAN) + 16);

/** The parse position in the input (`at`) and the output (`put`), and the used range of each scratch array. */
const cur = { at: 0, put: 0, posLo: SPAN, posHi: -1, negLo: SPAN, negHi: -1 };

/** The varint at cur.at. */
function varintAt(bytes: Uint8Array): number {
  let v = 0;
  let mul = 1;
  for (;;) {
    if (cur.at >= bytes.length || mul > 2 ** 56) throw new MalformedMessageError('sketch bytes: truncated or overlong varint');
    const b = bytes[cur.at++] as number;
    v += (b & 0x7f) * mul;
    if (b < 0x80) return v;
    mul *= 0x80;
  }
}

/** Add the store at cur.at into `into`; returns its [lo, hi] index range packed as lo * 2^16 + hi, or -1 if empty. */
function addStore(bytes: Uint8Array, into: Float64Array): number {
  const n = varintAt(bytes);
  if (n === 0) return -1;
  const z = varintAt(bytes);
  const lo = (z % 2 === 0 ? z / 2 : -(z + 1) / 2) - SKETCH_MIN_KEY;
  if (lo < 0 || lo + n > SPAN) throw new MalformedMessageError('sketch bytes: key out of range');
  let first = -1;
  let last = -1;
  for (let i = lo; i < lo + n; i++) {
    let c = cur.at < bytes.length ? (bytes[cur.at] as number) : 0x80;
    if (c < 0x80) cur.at++;
    else c = varintAt(bytes);
    if (c === 0) continue;
    into[i] += c;
    if (first < 0) first = i;
    last = i;
  }
  return first < 0 ? -1 : first * 65536 + last;
}

function putVarint(v: number): void {
  while (v >= 0x80) {
    out[cur.put++] = (v % 0x80) | 0x80;
    v = Math.floor(v / 0x80);
  }
  out[cur.put++] = v;
}

/** Encode scratch[lo..hi] as a store (BucketStore.encode's layout: nonzero ends only) and zero it again. */
function takeStore(from: Float64Array, lo: number, hi: number): void {
  if (lo > hi) {
    out[cur.put++] = 0;
    return;
  }
  putVarint(hi - lo + 1);
  const key = lo + SKETCH_MIN_KEY;
  putVarint(key >= 0 ? key * 2 : -key * 2 - 1);
  for (let i = lo; i <= hi; i++) {
    putVarint(from[i] as number);
    from[i] = 0;
  }
}

function addSketch(bytes: Uint8Array): number {
  cur.at = 0;
  const zero = varintAt(bytes);
  const p = addStore(bytes, scratchPos);
  if (p >= 0) {
    cur.posLo = Math.min(cur.posLo, Math.floor(p / 65536));
    cur.posHi = Math.max(cur.posHi, p % 65536);
  }
  const n = addStore(bytes, scratchNeg);
  if (n >= 0) {
    cur.negLo = Math.min(cur.negLo, Math.floor(n / 65536));
    cur.negHi = Math.max(cur.negHi, n % 65536);
  }
  return zero;
}

/**
 * The bucket bytes of the merge of two sketches' bucket bytes: the same bytes as
 * encodeBuckets of one decoded sketch after merge() of the other. Bytes that are not a
 * sketch's throw MalformedMessageError.
 */
export function mergeBucketBytes(a: Uint8Array, b: Uint8Array): Buffer {
  cur.posLo = SPAN;
  cur.posHi = -1;
  cur.negLo = SPAN;
  cur.negHi = -1;
  let zero: number;
  try {
    zero = addSketch(a) + addSketch(b);
  } catch (err) {
    scratchPos.fill(0);
    scratchNeg.fill(0);
    throw err;
  }
  cur.put = 0;
  putVarint(zero);
  takeStore(scratchPos, cur.posLo, cur.posHi);
  takeStore(scratchNeg, cur.negLo, cur.negHi);
  return Buffer.from(out.subarray(0, cur.put));
}
