import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MalformedMessageError, SKETCH_MAX_KEY, SKETCH_MIN_KEY, Sketch, Writer, mergeBucketBytes } from '@apm-sidecar/proto';
import { decodeSketch, encodeSketch } from '@apm-sidecar/collector/dist/store/metric-table';
import { mergeSketchBytes } from '@apm-sidecar/collector/dist/store/pg/sketch-bytes';
import { Prng } from '../helpers/prng';

/** The PostgreSQL store merges two sketches' bytes in one pass: the same bytes as decode, merge, encode (and as proto's mergeBucketBytes). */

function sketchOf(values: number[]): Sketch {
  const s = new Sketch();
  for (const v of values) s.add(v);
  return s;
}

function varint(v: number): number[] {
  const out: number[] = [];
  while (v >= 0x80) {
    out.push((v % 0x80) | 0x80);
    v = Math.floor(v / 0x80);
  }
  out.push(v);
  return out;
}

const zigzag = (k: number) => (k >= 0 ? k * 2 : -k * 2 - 1);

/** Bucket bytes written by hand: zero count, then each store as [lo, counts] (null: empty). */
function bytesOf(zero: number, pos: [number, number[]] | null, neg: [number, number[]] | null): Buffer {
  const store = (s: [number, number[]] | null) => (s === null ? [0] : [...varint(s[1].length), ...varint(zigzag(s[0])), ...s[1].flatMap(varint)]);
  return Buffer.from([...varint(zero), ...store(pos), ...store(neg)]);
}

describe('merging sketch bytes (pg/sketch-bytes.ts)', () => {
  it('gives the bytes of decode + Sketch.merge + encode, and of mergeBucketBytes, for sketches of every shape', () => {
    const p = new Prng(2026);
    const r = () => p.next();
    const w = new Writer(4096);
    const shapes: (() => number[])[] = [
      () => [],
      () => [0],
      () => Array.from({ length: 1 + Math.floor(r() * 50) }, () => r() * 1000),
      () => Array.from({ length: 1 + Math.floor(r() * 50) }, () => -r() * 1e6),
      () => Array.from({ length: 1 + Math.floor(r() * 200) }, () => (r() - 0.5) * 10 ** Math.floor(r() * 12 - 4)),
      () => [1e-12, -1e-12, 0, 5],
      () => [1e17, 1e-8],
      // Counts past one varint byte.
      () => Array.from({ length: 300 }, () => 42),
    ];
    let cases = 0;
    for (const a of shapes) {
      for (const b of shapes) {
        for (let rep = 0; rep < 20; rep++) {
          const sa = sketchOf(a());
          const sb = sketchOf(b());
          const ea = encodeSketch(sa, w);
          const eb = encodeSketch(sb, w);
          const want = decodeSketch(ea);
          want.merge(sb);
          const got = mergeSketchBytes(ea, eb).toString('hex');
          assert.equal(got, encodeSketch(want, w).toString('hex'));
          assert.equal(got, mergeBucketBytes(ea, eb).toString('hex'));
          cases++;
        }
      }
    }
    assert.equal(cases, 8 * 8 * 20);
  });

  it('trims zero counts at the ends of either input, keeps those inside, and fills the gap between disjoint ranges', () => {
    const cases: [Buffer, Buffer][] = [
      [bytesOf(0, [10, [0, 0, 3, 0, 4, 0]], null), bytesOf(2, [30, [1]], [5, [0, 7]])],
      [bytesOf(1, [10, [0, 0, 0]], [-4, [0]]), bytesOf(0, null, null)],
      [bytesOf(0, null, null), bytesOf(0, null, null)],
      [bytesOf(0, [-20, [5, 0, 0, 6]], null), bytesOf(0, [-19, [0, 0, 0, 0, 0, 9]], null)],
      [bytesOf(300, [SKETCH_MIN_KEY, [1]], null), bytesOf(0, [SKETCH_MAX_KEY, [2 ** 40]], [SKETCH_MIN_KEY, [200, 0, 1]])],
    ];
    for (const [a, b] of cases) {
      assert.equal(mergeSketchBytes(a, b).toString('hex'), mergeBucketBytes(a, b).toString('hex'), `${a.toString('hex')} + ${b.toString('hex')}`);
      assert.equal(mergeSketchBytes(b, a).toString('hex'), mergeBucketBytes(a, b).toString('hex'));
    }
    // Empty stores stay one zero byte; two empty sketches merge to three zero bytes.
    assert.equal(mergeSketchBytes(bytesOf(0, null, null), bytesOf(0, null, null)).toString('hex'), '000000');
    // A store whose counts are all zero merges to an empty store.
    assert.equal(mergeSketchBytes(bytesOf(0, [3, [0, 0]], null), bytesOf(0, null, null)).toString('hex'), '000000');
  });

  it('returns a copy each time (the scratch is reused)', () => {
    const w = new Writer(256);
    const a = encodeSketch(sketchOf([1, 2, 3]), w);
    const b = encodeSketch(sketchOf([100]), w);
    const first = mergeSketchBytes(a, b);
    const before = first.toString('hex');
    mergeSketchBytes(b, encodeSketch(sketchOf([-5, 1e9]), w));
    assert.equal(first.toString('hex'), before);
  });

  it('refuses bytes that are not a sketch’s: truncated, overlong varints, keys out of range', () => {
    const w = new Writer(256);
    const good = encodeSketch(sketchOf([1, 2, 3, 1000]), w);
    const bad = [
      Buffer.alloc(0),
      good.subarray(0, good.length - 1),
      Buffer.from([0, 5, 2, 1]),
      Buffer.from([0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0, 0]),
      bytesOf(0, [SKETCH_MAX_KEY, [1, 1]], null),
      bytesOf(0, null, [SKETCH_MIN_KEY - 1, [1]]),
    ];
    for (const b of bad) {
      assert.throws(() => mergeSketchBytes(good, b), MalformedMessageError, b.toString('hex'));
      assert.throws(() => mergeSketchBytes(b, good), MalformedMessageError, b.toString('hex'));
    }
    // Still right after a refusal.
    assert.equal(mergeSketchBytes(good, good).toString('hex'), mergeBucketBytes(good, good).toString('hex'));
  });
});
