import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { backoffDelay } from '@apm-sidecar/shim';
import fc from 'fast-check';

const lowest = () => 0;
const highest = () => 1 - Number.EPSILON;

describe('shim reconnect backoff (pure policy)', () => {
  it('the first attempt waits between min and 2·min', () => {
    assert.equal(backoffDelay(0, 100, 5000, lowest), 100);
    assert.equal(backoffDelay(0, 100, 5000, highest), 200);
    assert.equal(
      backoffDelay(0, 100, 5000, () => 0.5),
      150,
    );
  });

  it('the ceiling doubles with every attempt until it reaches max', () => {
    const expected = [200, 400, 800, 1600, 3200, 5000, 5000, 5000];
    expected.forEach((ceiling, attempt) => {
      assert.equal(backoffDelay(attempt, 100, 5000, highest), ceiling, `attempt ${attempt}`);
      assert.equal(backoffDelay(attempt, 100, 5000, lowest), 100, `attempt ${attempt} never waits less than min`);
    });
  });

  it('huge attempt numbers stay finite and capped', () => {
    for (const attempt of [31, 64, 1024, 1e9, Number.MAX_SAFE_INTEGER]) {
      const d = backoffDelay(attempt, 100, 5000, highest);
      assert.ok(Number.isFinite(d), `attempt ${attempt} gave ${d}`);
      assert.equal(d, 5000);
    }
  });

  it('is jittered: delays for the same attempt spread over the range', () => {
    const seen = new Set<number>();
    for (let i = 0; i < 200; i++) {
      const d = backoffDelay(4, 100, 5000);
      assert.ok(d >= 100 && d <= 3200, `delay ${d} out of [100, 3200]`);
      seen.add(d);
    }
    // 200 uniform draws over 3100 values: all equal would mean no jitter.
    assert.ok(seen.size > 50, `only ${seen.size} distinct delays`);
  });

  it('every delay is an integer within [min, min(max, min·2^(attempt+1))] (property)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 200 }),
        fc.integer({ min: 1, max: 60_000 }),
        fc.integer({ min: 0, max: 600_000 }),
        fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
        (attempt, min, extra, r) => {
          const max = min + extra;
          const d = backoffDelay(attempt, min, max, () => r);
          const ceiling = Math.min(max, min * 2 ** Math.min(attempt + 1, 30));
          return Number.isInteger(d) && d >= min && d <= ceiling;
        },
      ),
    );
  });
});
