import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  BucketStore,
  Reader,
  SKETCH_ALPHA,
  SKETCH_MAX_KEY,
  SKETCH_MIN_KEY,
  SKETCH_MIN_VALUE,
  Sketch,
  SketchRecorder,
  Writer,
  sketchKey,
  sketchValue,
} from '@apm-sidecar/proto';
import { bucketsOf, prng, sketchOf, sketchView } from './proto-fixtures';

const QUANTILES = [0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1];
const N = 20_000;

/** The lower quantile: the value at rank floor(q·(n − 1)) of the sorted data. */
function exactQuantile(sorted: Float64Array, q: number): number {
  return sorted[Math.floor(q * (sorted.length - 1))] as number;
}

function normal(rnd: () => number): number {
  // Box–Muller; 1 - rnd() is in (0, 1].
  return Math.sqrt(-2 * Math.log(1 - rnd())) * Math.cos(2 * Math.PI * rnd());
}

const DISTRIBUTIONS: Record<string, (rnd: () => number) => number> = {
  uniform: (r) => r() * 1000,
  exponential: (r) => -Math.log(1 - r()) * 50,
  lognormal: (r) => Math.exp(1 + 2 * normal(r)),
  'pareto (alpha 1.1, heavy tail)': (r) => 1 / (1 - r()) ** (1 / 1.1),
  'normal with negatives': (r) => 100 * normal(r) - 20,
  constant: () => 42.5,
  'one-third zeros': (r) => (r() < 1 / 3 ? 0 : r() < 0.5 ? -r() * 10 : r() * 1e6),
  'microseconds to hours': (r) => 10 ** (r() * 10 - 6),
};

function data(name: string, seed: number, n = N): number[] {
  const gen = DISTRIBUTIONS[name] as (rnd: () => number) => number;
  const rnd = prng(seed);
  return Array.from({ length: n }, () => gen(rnd));
}

function assertWithin(estimate: number, exact: number, what: string): void {
  if (exact === 0) {
    assert.equal(estimate, 0, `${what}: exact 0, estimated ${estimate}`);
    return;
  }
  const err = Math.abs(estimate - exact) / Math.abs(exact);
  assert.ok(err <= 0.01, `${what}: exact ${exact}, estimated ${estimate}, relative error ${err}`);
}

/** Everything observable about a sketch's distribution except the float sum. */
function shape(s: Sketch): unknown {
  const v = sketchView(s);
  return { count: v.count, min: v.min, max: v.max, zero: v.zero, pos: v.pos, neg: v.neg, quantiles: QUANTILES.map((q) => s.quantile(q)) };
}

function roundTrip(s: Sketch): { copy: Sketch; total: number } {
  const w = new Writer();
  s.encodeBuckets(w);
  const body = w.body();
  const r = new Reader(body);
  const copy = new Sketch();
  const total = copy.decodeBuckets(r);
  assert.equal(r.remaining, 0, 'decodeBuckets reads exactly what encodeBuckets wrote');
  return { copy, total };
}

describe('Sketch', () => {
  describe('accuracy', () => {
    for (const name of Object.keys(DISTRIBUTIONS)) {
      it(`estimates quantiles of ${name} data within 1% of the exact lower quantile`, () => {
        for (const seed of [1, 2, 3]) {
          const values = data(name, seed);
          const s = sketchOf(values);
          const sorted = Float64Array.from(values).sort();
          assert.equal(s.count, values.length);
          assert.equal(s.min, sorted[0], 'min is exact');
          assert.equal(s.max, sorted[sorted.length - 1], 'max is exact');
          for (const q of QUANTILES) assertWithin(s.quantile(q), exactQuantile(sorted, q), `${name} seed ${seed} q=${q}`);
        }
      });
    }

    it('estimates quantiles of small samples within 1%, including a single value', () => {
      const rnd = prng(11);
      for (let n = 1; n <= 40; n++) {
        const values = Array.from({ length: n }, () => (rnd() - 0.3) * 10 ** (rnd() * 8));
        const s = sketchOf(values);
        const sorted = Float64Array.from(values).sort();
        for (const q of QUANTILES) assertWithin(s.quantile(q), exactQuantile(sorted, q), `n=${n} q=${q}`);
      }
      assert.equal(sketchOf([7]).quantile(0.5), 7);
    });

    it('represents every bucket by a value inside it, within SKETCH_ALPHA of both ends', () => {
      const gamma = (1 + SKETCH_ALPHA) / (1 - SKETCH_ALPHA);
      for (let k = SKETCH_MIN_KEY; k <= SKETCH_MAX_KEY; k++) {
        const v = sketchValue(k);
        assert.ok(sketchKey(v) === k, `key of the value of bucket ${k} is ${sketchKey(v)}`);
        const upper = gamma ** k;
        const lower = gamma ** (k - 1);
        assert.ok(v - lower <= SKETCH_ALPHA * lower * (1 + 1e-9) && upper - v <= SKETCH_ALPHA * upper * (1 + 1e-9), `bucket ${k}`);
      }
    });

    it('returns NaN for an empty sketch or a quantile outside [0, 1]', () => {
      assert.ok(Number.isNaN(new Sketch().quantile(0.5)));
      const s = sketchOf([1, 2, 3]);
      for (const q of [-0.1, 1.1, Number.NaN]) assert.ok(Number.isNaN(s.quantile(q)), `q=${q}`);
    });

    it('counts magnitudes at or below SKETCH_MIN_VALUE as zero', () => {
      const s = sketchOf([0, -0, SKETCH_MIN_VALUE, -SKETCH_MIN_VALUE, 1e-300, Number.MIN_VALUE, 2e-9]);
      assert.equal(s.zero, 6);
      assert.equal(s.count, 7);
      assert.deepStrictEqual(bucketsOf(s.pos), [[sketchKey(2e-9), 1]]);
      assert.ok(s.neg.empty);
    });
  });

  describe('merge', () => {
    const values = [...data('lognormal', 5, 6000), ...data('normal with negatives', 6, 6000), ...data('one-third zeros', 7, 3000)];
    const whole = sketchOf(values);

    function parts(k: number, seed: number): Sketch[] {
      // Uneven, shuffled parts: each value goes to a random part.
      const rnd = prng(seed);
      const out = Array.from({ length: k }, () => new Sketch());
      for (const v of values) (out[Math.floor(rnd() * k)] as Sketch).add(v);
      return out;
    }

    function foldLeft(ps: Sketch[]): Sketch {
      const acc = new Sketch();
      for (const p of ps) acc.merge(p);
      return acc;
    }

    function tree(ps: Sketch[]): Sketch {
      if (ps.length === 1) return foldLeft(ps);
      const mid = ps.length >> 1;
      const a = tree(ps.slice(0, mid));
      a.merge(tree(ps.slice(mid)));
      return a;
    }

    function copies(k: number, seed: number): Sketch[] {
      // Fresh parts for each grouping, since merge mutates its receiver.
      return parts(k, seed);
    }

    it('gives the same buckets, count, min, max and quantiles as one sketch of all the data, in any order or grouping', () => {
      const expected = shape(whole);
      for (const k of [2, 3, 5, 8]) {
        const seed = 100 + k;
        const groupings: [string, Sketch][] = [
          ['left fold', foldLeft(copies(k, seed))],
          ['reverse fold', foldLeft(copies(k, seed).reverse())],
          ['tree', tree(copies(k, seed))],
          ['reverse tree', tree(copies(k, seed).reverse())],
          [
            'into the last part',
            (() => {
              const ps = copies(k, seed);
              const last = ps.pop() as Sketch;
              for (const p of ps) last.merge(p);
              return last;
            })(),
          ],
        ];
        const rnd = prng(seed);
        for (let t = 0; t < 5; t++) {
          const ps = copies(k, seed);
          for (let i = ps.length - 1; i > 0; i--) {
            const j = Math.floor(rnd() * (i + 1));
            [ps[i], ps[j]] = [ps[j] as Sketch, ps[i] as Sketch];
          }
          groupings.push([`shuffle ${t}`, t % 2 === 0 ? foldLeft(ps) : tree(ps)]);
        }
        for (const [how, merged] of groupings) {
          assert.deepStrictEqual(shape(merged), expected, `k=${k}, ${how}`);
          // The float sum depends on the order of additions; it stays close.
          assert.ok(Math.abs(merged.sum - whole.sum) <= 1e-9 * Math.abs(whole.sum) + 1e-6, `sum k=${k}, ${how}`);
        }
      }
    });

    it('is associative: (a + b) + c equals a + (b + c)', () => {
      const [a1, b1, c1] = parts(3, 9) as [Sketch, Sketch, Sketch];
      const [a2, b2, c2] = parts(3, 9) as [Sketch, Sketch, Sketch];
      a1.merge(b1);
      a1.merge(c1);
      b2.merge(c2);
      a2.merge(b2);
      assert.deepStrictEqual(shape(a1), shape(a2));
      assert.deepStrictEqual(shape(a1), shape(whole));
    });

    it('treats an empty sketch as the identity on either side', () => {
      const s = sketchOf(values);
      s.merge(new Sketch());
      assert.deepStrictEqual(shape(s), shape(whole));
      const e = new Sketch();
      e.merge(whole);
      assert.deepStrictEqual(shape(e), shape(whole));
      assert.equal(e.sum, whole.sum);
    });

    it('merges parts whose bucket ranges do not overlap', () => {
      const small = Array.from({ length: 100 }, (_, i) => 1e-6 * (i + 1));
      const large = Array.from({ length: 100 }, (_, i) => 1e12 * (i + 1));
      const a = sketchOf(small);
      a.merge(sketchOf(large));
      const b = sketchOf(large);
      b.merge(sketchOf(small));
      assert.deepStrictEqual(shape(a), shape(sketchOf([...small, ...large])));
      assert.deepStrictEqual(shape(b), shape(a));
    });
  });

  describe('encodeBuckets / decodeBuckets', () => {
    const cases: [string, number[]][] = [
      ['empty', []],
      ['zeros only', [0, 0, 0]],
      ['positive only', data('exponential', 21, 2000)],
      ['negative only', data('exponential', 22, 2000).map((v) => -v)],
      ['mixed signs and zeros', data('one-third zeros', 23, 5000)],
      ['extremes', [Number.MAX_VALUE, 1e300, 1e-8, -1e-8, -Number.MAX_VALUE]],
    ];
    for (const [name, values] of cases) {
      it(`round-trips the buckets of a sketch with ${name} values and returns their total count`, () => {
        const s = sketchOf(values);
        const { copy, total } = roundTrip(s);
        assert.equal(total, values.length);
        assert.equal(copy.zero, s.zero);
        assert.deepStrictEqual(bucketsOf(copy.pos), bucketsOf(s.pos));
        assert.deepStrictEqual(bucketsOf(copy.neg), bucketsOf(s.neg));
        // With count/min/max carried beside the buckets (as in a metrics point), quantiles match.
        copy.count = s.count;
        copy.sum = s.sum;
        copy.min = s.min;
        copy.max = s.max;
        assert.deepStrictEqual(shape(copy), shape(s));
      });
    }

    it('decodes sketches written back to back in one buffer', () => {
      const sketches = [sketchOf([1, 2, 3]), new Sketch(), sketchOf([-5, 0, 5e9]), sketchOf(data('pareto (alpha 1.1, heavy tail)', 3, 500))];
      const w = new Writer();
      for (const s of sketches) s.encodeBuckets(w);
      const r = new Reader(w.body());
      for (const s of sketches) {
        const copy = new Sketch();
        assert.equal(copy.decodeBuckets(r), s.count);
        assert.deepStrictEqual([copy.zero, bucketsOf(copy.pos), bucketsOf(copy.neg)], [s.zero, bucketsOf(s.pos), bucketsOf(s.neg)]);
      }
      assert.equal(r.remaining, 0);
    });

    it('encodes a merged sketch the same as one built from all the data', () => {
      const values = data('lognormal', 31, 3000);
      const a = sketchOf(values.slice(0, 1000));
      a.merge(sketchOf(values.slice(1000)));
      const wa = new Writer();
      a.encodeBuckets(wa);
      const wb = new Writer();
      sketchOf(values).encodeBuckets(wb);
      assert.ok(wa.body().equals(wb.body()));
    });
  });

  describe('bounded memory', () => {
    const MAX_BUCKETS = SKETCH_MAX_KEY - SKETCH_MIN_KEY + 1;

    it('never holds more than SKETCH_MAX_KEY - SKETCH_MIN_KEY + 1 counts per sign for values from 1e-12 to 1e20', () => {
      const rnd = prng(77);
      const s = new Sketch();
      const exps: number[] = [];
      // Alternate the ends so the stores grow in both directions, then fill in between.
      for (let i = 0; i < 200; i++) exps.push(i % 2 === 0 ? -12 + i * 0.01 : 20 - i * 0.01);
      for (let i = 0; i < 50_000; i++) exps.push(-12 + rnd() * 32);
      for (const e of exps) {
        const v = 10 ** e;
        s.add(v);
        s.add(-v);
        assert.ok(s.pos.counts.length <= MAX_BUCKETS && s.neg.counts.length <= MAX_BUCKETS, `after 10^${e}`);
      }
      for (const store of [s.pos, s.neg]) {
        assert.ok(store.lo >= SKETCH_MIN_KEY && store.hi <= SKETCH_MAX_KEY);
        assert.ok(store.offset >= SKETCH_MIN_KEY && store.offset + store.counts.length - 1 <= SKETCH_MAX_KEY);
      }
      assert.equal(s.count, 2 * exps.length);
      const held = s.zero + bucketsOf(s.pos).reduce((a, [, c]) => a + c, 0) + bucketsOf(s.neg).reduce((a, [, c]) => a + c, 0);
      assert.equal(held, s.count, 'every value is counted in some bucket');
      // The middle of the distribution is still estimated within 1%.
      const all = Float64Array.from(exps.flatMap((e) => [10 ** e, -(10 ** e)])).sort();
      for (const q of [0.1, 0.25, 0.75, 0.9]) assertWithin(s.quantile(q), exactQuantile(all, q), `q=${q}`);
    });

    it('clamps keys of huge values to SKETCH_MAX_KEY', () => {
      for (const v of [1e18, 1e19, 1e100, Number.MAX_VALUE]) assert.ok(sketchKey(v) <= SKETCH_MAX_KEY, String(v));
      const s = sketchOf([1e19, 1e100, Number.MAX_VALUE]);
      assert.deepStrictEqual(bucketsOf(s.pos), [[SKETCH_MAX_KEY, 3]]);
    });

    it('a BucketStore fed every key in random order stays within the key range', () => {
      const store = new BucketStore();
      const keys = Array.from({ length: MAX_BUCKETS }, (_, i) => SKETCH_MIN_KEY + i);
      const rnd = prng(5);
      for (let i = keys.length - 1; i > 0; i--) {
        const j = Math.floor(rnd() * (i + 1));
        [keys[i], keys[j]] = [keys[j] as number, keys[i] as number];
      }
      for (const k of keys) store.add(k, 1);
      assert.ok(store.counts.length <= MAX_BUCKETS);
      assert.equal(store.lo, SKETCH_MIN_KEY);
      assert.equal(store.hi, SKETCH_MAX_KEY);
      assert.equal(bucketsOf(store).length, MAX_BUCKETS);
    });
  });

  describe('clear', () => {
    it('empties the sketch and then behaves like a fresh one, keeping its allocation', () => {
      const s = sketchOf(data('normal with negatives', 41, 5000));
      const pos = s.pos.counts;
      const neg = s.neg.counts;
      s.clear();
      assert.equal(s.count, 0);
      assert.equal(s.sum, 0);
      assert.equal(s.zero, 0);
      assert.ok(s.pos.empty && s.neg.empty);
      assert.deepStrictEqual(bucketsOf(s.pos), []);
      assert.ok(Number.isNaN(s.quantile(0.5)));
      assert.equal(s.pos.counts, pos, 'positive store kept its array');
      assert.equal(s.neg.counts, neg, 'negative store kept its array');
      assert.ok(s.pos.counts.every((c) => c === 0) && s.neg.counts.every((c) => c === 0), 'no stale counts');

      const next = data('one-third zeros', 42, 5000);
      for (const v of next) s.add(v);
      const fresh = sketchOf(next);
      assert.deepStrictEqual(shape(s), shape(fresh));
      assert.equal(s.sum, fresh.sum);
      const { copy } = roundTrip(s);
      assert.deepStrictEqual([copy.zero, bucketsOf(copy.pos), bucketsOf(copy.neg)], [fresh.zero, bucketsOf(fresh.pos), bucketsOf(fresh.neg)]);
    });

    it('can be cleared and refilled many times, and merged after a clear', () => {
      const s = new Sketch();
      for (let round = 0; round < 20; round++) {
        const values = data(round % 2 === 0 ? 'uniform' : 'lognormal', 50 + round, 500);
        for (const v of values) s.add(v);
        assert.deepStrictEqual(shape(s), shape(sketchOf(values)), `round ${round}`);
        s.clear();
      }
      s.merge(sketchOf([3, 4]));
      assert.deepStrictEqual(shape(s), shape(sketchOf([3, 4])));
    });
  });
});

describe('SketchRecorder (the half of Sketch a shim bundles)', () => {
  function bucketBytes(s: SketchRecorder): Buffer {
    const w = new Writer();
    s.encodeBuckets(w);
    return w.body();
  }

  it('writes the same bucket bytes, count, sum, min and max as a Sketch fed the same values, across clears', () => {
    const rec = new SketchRecorder();
    for (const [round, name] of Object.keys(DISTRIBUTIONS).entries()) {
      const values = data(name, 70 + round, 3000);
      const full = new Sketch();
      for (const v of values) {
        rec.add(v);
        full.add(v);
      }
      assert.deepStrictEqual(bucketBytes(rec), bucketBytes(full), name);
      assert.deepStrictEqual([rec.count, rec.sum, rec.min, rec.max, rec.zero], [full.count, full.sum, full.min, full.max, full.zero], name);
      const copy = new Sketch();
      copy.decodeBuckets(new Reader(bucketBytes(rec)));
      assert.deepStrictEqual(
        [copy.zero, bucketsOf(copy.pos), bucketsOf(copy.neg)],
        [full.zero, bucketsOf(full.pos), bucketsOf(full.neg)],
        `${name}: decoded by a Sketch`,
      );
      rec.clear();
    }
    assert.deepStrictEqual(bucketBytes(rec), bucketBytes(new Sketch()), 'cleared: the bytes of an empty sketch');
  });
});
