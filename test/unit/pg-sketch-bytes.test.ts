import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Sketch, Writer } from '@apm-sidecar/proto';
import { decodeSketch, encodeSketch } from '@apm-sidecar/collector/dist/store/metric-table';
import { mergeEncodedSketch } from '@apm-sidecar/collector/dist/store/pg/sketch-bytes';
import { Prng } from '../helpers/prng';

/** The PostgreSQL store merges a stored sketch with a batch's on the bytes: the same bytes as decode, merge, encode. */

function sketchOf(values: number[]): Sketch {
  const s = new Sketch();
  for (const v of values) s.add(v);
  return s;
}

describe('merging encoded sketches (pg/sketch-bytes.ts)', () => {
  it('gives the bytes of decode + Sketch.merge + encode, for sketches of every shape', () => {
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
    ];
    let cases = 0;
    for (const a of shapes) {
      for (const b of shapes) {
        for (let rep = 0; rep < 20; rep++) {
          const stored = encodeSketch(sketchOf(a()), w);
          const batch = sketchOf(b());
          const want = decodeSketch(stored);
          want.merge(batch);
          assert.deepEqual(mergeEncodedSketch(stored, batch, w).toString('hex'), encodeSketch(want, w).toString('hex'));
          cases++;
        }
      }
    }
    assert.equal(cases, 7 * 7 * 20);
  });

  it('merges a batch sketch with zero buckets at its ends as Sketch.merge does (they do not widen the range)', () => {
    const w = new Writer(256);
    const stored = encodeSketch(sketchOf([10, 20]), w);
    const batch = sketchOf([100, 1000]);
    // Zero counts at both ends of the batch's range, as a store that was cleared and reused holds.
    batch.pos.add(batch.pos.lo - 3, 0);
    batch.pos.add(batch.pos.hi + 3, 0);
    const want = decodeSketch(stored);
    want.merge(batch);
    assert.equal(mergeEncodedSketch(stored, batch, w).toString('hex'), encodeSketch(want, w).toString('hex'));
  });
});
