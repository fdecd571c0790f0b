import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MalformedMessageError, MetricKind, Reader, type Sketch, Writer, mergeBucketBytes, skipBuckets } from '@apm-sidecar/proto';
import { type UpMetricPack, decodeMetricBatch, encodeMetricBatch } from '@apm-sidecar/proto/upstream';
import { bucketsOf, histogramPoint, point, prng, sketchOf } from './proto-fixtures';

/** Sketch.encodeBuckets bytes. */
function bytesOf(s: Sketch): Buffer {
  const w = new Writer(64);
  s.encodeBuckets(w);
  return w.body();
}

/** Values from a mix of shapes: zeros, negatives, tiny and huge magnitudes, or nothing. */
function values(rnd: () => number): number[] {
  const n = Math.floor(rnd() * 60);
  const scale = Math.exp(rnd() * 30 - 15);
  return Array.from({ length: n }, () => {
    const r = rnd();
    return r < 0.1 ? 0 : r < 0.3 ? -rnd() * scale : rnd() * scale * (rnd() < 0.02 ? 1e9 : 1);
  });
}

describe('sketch bucket bytes, merged and checked without building a Sketch', () => {
  it('mergeBucketBytes gives the bytes of encodeBuckets after Sketch.merge, for any two sketches', () => {
    const rnd = prng(7);
    for (let i = 0; i < 2000; i++) {
      const a = sketchOf(values(rnd));
      const b = sketchOf(values(rnd));
      const merged = sketchOf([]);
      merged.merge(a);
      merged.merge(b);
      assert.deepEqual(mergeBucketBytes(bytesOf(a), bytesOf(b)), bytesOf(merged), `case ${i}`);
    }
  });

  it('bytes that are not a sketch throw ERR_MALFORMED_MESSAGE, and the next merge is still exact', () => {
    const a = bytesOf(sketchOf([1, 2, 3, -4, 0]));
    const b = bytesOf(sketchOf([5, 6000]));
    for (let n = 0; n < a.length; n++) {
      assert.throws(
        () => mergeBucketBytes(b, a.subarray(0, n)),
        (err: unknown) => err instanceof MalformedMessageError && err.code === 'ERR_MALFORMED_MESSAGE',
        `first ${n} bytes`,
      );
    }
    const outOfRange = new Writer(16).varint(0).varint(1).zigzag(1e6).varint(1).varint(0).body();
    assert.throws(() => mergeBucketBytes(b, outOfRange), MalformedMessageError);
    const merged = sketchOf([1, 2, 3, -4, 0, 5, 6000]);
    assert.deepEqual(mergeBucketBytes(a, b), bytesOf(merged));
  });

  it('skipBuckets accepts and rejects exactly what Sketch.decodeBuckets does, with the same total and end', () => {
    const rnd = prng(11);
    for (let i = 0; i < 3000; i++) {
      const good = bytesOf(sketchOf(values(rnd)));
      // Damage some: flip a byte, cut, or append.
      const bytes = Buffer.from(good);
      const how = Math.floor(rnd() * 4);
      if (how === 1 && bytes.length > 0) bytes[Math.floor(rnd() * bytes.length)] = Math.floor(rnd() * 256);
      const input = how === 2 ? bytes.subarray(0, Math.floor(rnd() * bytes.length)) : how === 3 ? Buffer.concat([bytes, Buffer.of(0x80, 1)]) : bytes;
      const viaSketch = outcome(() => {
        const r = new Reader(input);
        const total = sketchOf([]).decodeBuckets(r);
        return [total, r.pos];
      });
      const viaSkip = outcome(() => {
        const r = new Reader(input);
        const total = skipBuckets(r);
        return [total, r.pos];
      });
      assert.deepEqual(viaSkip, viaSketch, `case ${i} (${input.toString('hex')})`);
    }
  });

  it('an upstream metric batch keeps each histogram sketch as the bytes sent, and builds the same Sketch from them when read', () => {
    const lat = histogramPoint('lat', { route: '/pay' }, [1.5, 20, 20, 300, -2, 0]);
    const orders = point(MetricKind.Counter, 'orders', {}, { count: 2, sum: 2, min: 1, max: 1 });
    const packs: UpMetricPack[] = [{ packId: 'p', intervalStart: 60_000, intervalMs: 10_000, points: [lat, orders] }];
    const [got] = decodeMetricBatch(encodeMetricBatch(packs));
    const [h, c] = got?.points ?? [];
    assert.deepEqual(h?.sketchBytes, bytesOf(lat.sketch as Sketch));
    const built = h?.sketch as Sketch;
    assert.deepEqual([built.count, built.sum, built.min, built.max, built.zero], [6, lat.sum, -2, 300, 1]);
    assert.deepEqual(bucketsOf(built.pos), bucketsOf((lat.sketch as Sketch).pos));
    assert.deepEqual(bucketsOf(built.neg), bucketsOf((lat.sketch as Sketch).neg));
    assert.equal(h?.sketch, built, 'built once');
    assert.equal(c?.sketchBytes, undefined);
    assert.equal(c?.sketch, null);
  });
});

function outcome(fn: () => unknown): unknown {
  try {
    return { ok: fn() };
  } catch (err) {
    return { threw: err instanceof MalformedMessageError ? 'malformed' : String(err) };
  }
}
