import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ApmError } from '@apm-sidecar/proto';
import {
  PROFILES,
  ReconnectScheduleError,
  ReconnectAttemptError,
  attemptLimit,
  formatReconnectSchedule,
  nextDelay,
  parseReconnectSchedule,
  reconnectPolicy,
} from '@apm-sidecar/sidecar';

/** A random() that always returns `v`. */
const fixed = (v: number) => () => v;

describe('reconnect schedule: profiles', () => {
  it('appdynamics gives seven 60 s attempts, then 300 s forever', () => {
    const s = parseReconnectSchedule(PROFILES.appdynamics.reconnect_schedule);
    for (let attempt = 0; attempt < 7; attempt++) assert.equal(nextDelay(s, attempt), 60000, `attempt ${attempt}`);
    for (const attempt of [7, 8, 9, 50, 10_000]) assert.equal(nextDelay(s, attempt), 300000, `attempt ${attempt}`);
    assert.equal(attemptLimit(s), Infinity);
  });

  it('whatap gives three delays within [5000, 10000], then stop', () => {
    const s = parseReconnectSchedule(PROFILES.whatap.reconnect_schedule);
    for (let attempt = 0; attempt < 3; attempt++) {
      const d = nextDelay(s, attempt);
      assert.equal(typeof d, 'number');
      assert.ok((d as number) >= 5000 && (d as number) <= 10000, `attempt ${attempt}: ${d}`);
      assert.ok(Number.isInteger(d));
    }
    for (const attempt of [3, 4, 1000]) assert.equal(nextDelay(s, attempt), 'stop');
    assert.equal(attemptLimit(s), 3);
  });

  it('the profile texts are exactly those of the design', () => {
    assert.deepEqual(PROFILES, {
      appdynamics: { reconnect_schedule: '7x60000,300000' },
      whatap: { reconnect_schedule: '3x5000-10000,stop' },
    });
  });
});

describe('reconnect schedule: delays', () => {
  it('draws a delay in MIN-MAX from the injected random, inclusive at both ends', () => {
    const s = parseReconnectSchedule('3x5000-10000,stop');
    assert.equal(nextDelay(s, 0, fixed(0)), 5000);
    assert.equal(nextDelay(s, 1, fixed(0.5)), 7500);
    assert.equal(nextDelay(s, 2, fixed(0.9999999)), 10000);
    // An injected random that returns exactly 1 must not escape the range.
    assert.equal(nextDelay(s, 0, fixed(1)), 10000);
  });

  it('calls the injected random once per ranged delay and never for a fixed delay', () => {
    let calls = 0;
    const counting = () => {
      calls++;
      return 0.25;
    };
    const s = parseReconnectSchedule('2x100,1x0-3');
    assert.equal(nextDelay(s, 0, counting), 100);
    assert.equal(calls, 0);
    assert.equal(nextDelay(s, 2, counting), 1);
    assert.equal(calls, 1);
  });

  it('a ranged delay always lies in [MIN, MAX] for any random in [0, 1)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 100_000 }),
        fc.integer({ min: 0, max: 100_000 }),
        fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
        (a, b, r) => {
          const [min, max] = a <= b ? [a, b] : [b, a];
          const d = nextDelay(parseReconnectSchedule(`1x${min}-${max}`), 0, fixed(r));
          return typeof d === 'number' && Number.isInteger(d) && d >= min && d <= max;
        },
      ),
    );
  });

  it('repeats the last counted item forever when there is no stop', () => {
    const s = parseReconnectSchedule('3x1000,2x2000');
    assert.deepEqual(
      [0, 1, 2, 3, 4, 5, 6, 99].map((a) => nextDelay(s, a)),
      [1000, 1000, 1000, 2000, 2000, 2000, 2000, 2000],
    );
  });

  it('a bare delay alone repeats forever', () => {
    const s = parseReconnectSchedule('250');
    assert.deepEqual(
      [0, 1, 1000].map((a) => nextDelay(s, a)),
      [250, 250, 250],
    );
  });

  it('a bare MIN-MAX as the last item repeats forever with jitter', () => {
    const s = parseReconnectSchedule('1x10,20-30');
    assert.equal(nextDelay(s, 0, fixed(0.5)), 10);
    assert.equal(nextDelay(s, 1, fixed(0)), 20);
    assert.equal(nextDelay(s, 500, fixed(0.9999)), 30);
  });

  it('stops after all counted attempts when the list ends in stop', () => {
    const s = parseReconnectSchedule('1x10,2x20,stop');
    assert.deepEqual(
      [0, 1, 2, 3, 4].map((a) => nextDelay(s, a)),
      [10, 20, 20, 'stop', 'stop'],
    );
    assert.equal(attemptLimit(s), 3);
  });

  it('allows a zero delay (tests run whole timelines in milliseconds)', () => {
    assert.equal(nextDelay(parseReconnectSchedule('2x0,stop'), 1), 0);
  });

  it('reconnectPolicy wraps the schedule as (attempt) => delay | stop', () => {
    const policy = reconnectPolicy(parseReconnectSchedule('1x5-7,stop'), fixed(0));
    assert.equal(policy(0), 5);
    assert.equal(policy(1), 'stop');
  });

  it('rejects a negative or fractional attempt number with ERR_RECONNECT_ATTEMPT', () => {
    const s = parseReconnectSchedule('5');
    for (const attempt of [-1, 1.5, Number.NaN]) {
      assert.throws(
        () => nextDelay(s, attempt),
        (e: unknown) => e instanceof ReconnectAttemptError && e.code === 'ERR_RECONNECT_ATTEMPT',
      );
    }
  });
});

describe('reconnect schedule: parsing', () => {
  it('parses counts, ranges and stop into steps', () => {
    assert.deepEqual(parseReconnectSchedule('7x60000,300000'), {
      steps: [
        { count: 7, minMs: 60000, maxMs: 60000 },
        { count: 1, minMs: 300000, maxMs: 300000 },
      ],
      then: 'repeat',
    });
    assert.deepEqual(parseReconnectSchedule('3x5000-10000,stop'), {
      steps: [{ count: 3, minMs: 5000, maxMs: 10000 }],
      then: 'stop',
    });
  });

  it('accepts spaces around items, an upper-case X and STOP', () => {
    assert.deepEqual(parseReconnectSchedule(' 3 X 5000 - 10000 , STOP '), parseReconnectSchedule('3x5000-10000,stop'));
  });

  it('formats back to canonical text', () => {
    for (const text of ['7x60000,300000', '3x5000-10000,stop', '250', '3x1000,2x2000', '1x10,20-30', '1x5,stop']) {
      assert.equal(formatReconnectSchedule(parseReconnectSchedule(text)), text);
    }
    // Equivalent spellings normalise.
    assert.equal(formatReconnectSchedule(parseReconnectSchedule('7x60000, 1x300000')), '7x60000,300000');
    assert.equal(formatReconnectSchedule(parseReconnectSchedule('2x5-5,stop')), '2x5,stop');
  });

  const bad: Array<[string, string, RegExp]> = [
    ['empty', '', /empty/],
    ['blank', '   ', /empty/],
    ['an empty item', '7x60000,,300000', /item 2 is empty/],
    ['a trailing comma', '3x5,', /item 2 is empty/],
    ['a zero count', '0x5000', /count is 0/],
    ['MIN greater than MAX', '3x10000-5000', /MIN 10000 is greater than MAX 5000/],
    ['a bare MIN greater than MAX', '9-3', /MIN 9 is greater than MAX 3/],
    ['a non-number delay', '3xabc', /"abc" is not a non-negative integer/],
    ['a non-number count', 'ax5000', /count "a" is not a positive integer/],
    ['a fractional count', '1.5x5000', /count "1.5" is not a positive integer/],
    ['a fractional delay', '3x1.5', /"1.5" is not a non-negative integer/],
    ['a negative delay', '3x-5', /MIN "" is not a non-negative integer/],
    ['a missing delay', '3x', /delay "" is not a non-negative integer/],
    ['a non-number MAX', '3x5-b', /MAX "b" is not a non-negative integer/],
    ['a plain word', 'forever', /is not a non-negative integer/],
    ['a delay beyond the timer limit', '1x2147483648', /greater than the maximum 2147483647/],
    ['stop not last', '3x5000,stop,300000', /"stop" must be the last item/],
    ['stop first', 'stop', /"stop" cannot be the first item/],
    ['stop first with items after it', 'stop,3x5000', /"stop" cannot be the first item/],
    ['a bare item not last', '300000,7x60000', /only the last item may/],
    ['a bare item followed by stop', '5000,stop', /never reached/],
  ];
  for (const [what, text, pattern] of bad) {
    it(`rejects ${what} (${JSON.stringify(text)}) with ERR_RECONNECT_SCHEDULE`, () => {
      assert.throws(
        () => parseReconnectSchedule(text),
        (err: unknown) => {
          assert.ok(err instanceof ReconnectScheduleError);
          assert.ok(err instanceof ApmError);
          assert.equal(err.code, 'ERR_RECONNECT_SCHEDULE');
          assert.equal(err.text, text);
          assert.match(err.detail, pattern);
          assert.ok(err.message.includes(JSON.stringify(text)), err.message);
          return true;
        },
      );
    });
  }
});
