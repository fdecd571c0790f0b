import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import type { SidecarState } from '@apm-sidecar/proto';
import { Link, type LinkCarrier, PROFILES, StateHolder, parseReconnectSchedule } from '@apm-sidecar/sidecar';
import { FakeClock, fileLogger } from '../helpers/fake-clock';

const MINUTE = 60_000;

/**
 * A carrier with no sockets: it records each dial at the fake clock's time and, when the test
 * says the collector is unreachable, refuses the attempt at once (from inside dial, which is
 * how a synchronous failure reaches the Link).
 */
class FakeCarrier implements LinkCarrier {
  readonly dials: { at: number; host: number }[] = [];
  reachable = false;
  link: Link | null = null;
  constructor(private readonly clock: FakeClock) {}
  dial(host: number): void {
    this.dials.push({ at: this.clock.now(), host });
    const link = this.link as Link;
    if (this.reachable) link.up(`connected to host ${host}`);
    else link.down('connect ECONNREFUSED');
  }
}

interface RigOptions {
  schedule?: string;
  hosts?: number;
  standbyAfterMs?: number;
  muteAfterAttempts?: number;
  random?: () => number;
}

const logs: (() => void)[] = [];
after(() => {
  for (const cleanup of logs) cleanup();
});

/** A Link on a fake clock with the real defaults (appdynamics, standby_after_ms 60000, mute_after_attempts 3). */
function rig(o: RigOptions = {}) {
  const clock = new FakeClock();
  const t0 = clock.now();
  const { log, lines, cleanup } = fileLogger();
  logs.push(cleanup);
  const holder = new StateHolder(log);
  const changes: { at: number; from: SidecarState; to: SidecarState; cause: string }[] = [];
  holder.onChange((to, cause, from) => changes.push({ at: clock.now() - t0, from, to, cause }));
  const link = new Link(holder, log, {
    hosts: Array.from({ length: o.hosts ?? 1 }, (_, i) => `10.0.0.${i + 1}:6600`),
    schedule: parseReconnectSchedule(o.schedule ?? PROFILES.appdynamics.reconnect_schedule),
    standbyAfterMs: o.standbyAfterMs ?? MINUTE,
    muteAfterAttempts: o.muteAfterAttempts ?? 3,
    clock,
    ...(o.random !== undefined && { random: o.random }),
  });
  const carrier = new FakeCarrier(clock);
  carrier.link = link;
  /** Milliseconds since the rig was made. */
  const at = (): number => clock.now() - t0;
  const dialTimes = (): number[] => carrier.dials.map((d) => d.at - t0);
  return { clock, link, carrier, holder, changes, lines, at, dialTimes };
}

/** Start reachable, become active, then lose the session at `lossAt`; the collector stays away. */
function activeThenLost(r: ReturnType<typeof rig>, lossAt = 1_000): void {
  r.carrier.reachable = true;
  r.link.start(r.carrier);
  assert.equal(r.holder.state, 'active');
  r.clock.advance(lossAt);
  r.carrier.reachable = false;
  r.link.down('connection closed by the collector');
}

describe('Link on a fake clock: the default timeline (appdynamics, real milliseconds)', () => {
  test('unreachable from the start: connecting until 60000 ms, then standby; the third failed attempt mutes', () => {
    const r = rig();
    r.link.start(r.carrier);
    r.clock.advanceTo(r.clock.now() + MINUTE - 1);
    assert.equal(r.holder.state, 'connecting', 'still connecting 1 ms before standby_after_ms');
    r.clock.advance(1);
    assert.equal(r.holder.state, 'standby');
    assert.equal(r.holder.since, r.clock.now(), 'the state is dated by the injected clock');
    r.clock.advance(MINUTE);
    assert.deepEqual(
      r.changes.map((c) => [c.at, c.from, c.to]),
      [
        [MINUTE, 'connecting', 'standby'],
        [2 * MINUTE, 'standby', 'muted'],
      ],
    );
    assert.deepEqual(r.dialTimes(), [0, MINUTE, 2 * MINUTE], 'the third failed attempt is the one at 120000 ms');
    assert.match(r.changes[1]?.cause ?? '', /^3 failed attempts to reach the collector \(mute_after_attempts=3\): connect ECONNREFUSED$/);
    assert.match(r.changes[0]?.cause ?? '', /unreachable for 60000 ms \(standby_after_ms\)/);
  });

  test('after a loss: attempts at exactly 7 × 60000 ms, then every 300000 ms, going on while muted', () => {
    const r = rig();
    activeThenLost(r);
    const loss = r.at();
    r.clock.advance(7 * MINUTE + 4 * 300_000);
    const after = r
      .dialTimes()
      .slice(1)
      .map((t) => t - loss);
    assert.deepEqual(after, [1, 2, 3, 4, 5, 6, 7].map((k) => k * MINUTE).concat([1, 2, 3, 4].map((k) => 7 * MINUTE + k * 300_000)));
    assert.deepEqual(
      r.changes.slice(1).map((c) => [c.at - loss, c.to]),
      [
        [0, 'reconnecting'],
        [MINUTE, 'standby'],
        [3 * MINUTE, 'muted'],
      ],
    );
    const planned = r
      .lines()
      .filter((l) => l.event === 'reconnect-scheduled')
      .map((l) => l.delayMs);
    assert.deepEqual(planned.slice(0, 9), [MINUTE, MINUTE, MINUTE, MINUTE, MINUTE, MINUTE, MINUTE, 300_000, 300_000]);
    assert.equal(r.clock.nextAt !== null && r.clock.nextAt - r.clock.now(), 300_000, 'the next attempt is already set, 5 minutes on');
  });

  test('an attempt that fails after a connect timeout: the schedule counts from the failure', () => {
    const r = rig();
    activeThenLost(r);
    const loss = r.at();
    // The first scheduled attempt hangs for 5000 ms, then fails.
    r.carrier.dial = function (this: FakeCarrier, host: number) {
      this.dials.push({ at: r.clock.now(), host });
      r.clock.setTimeout(() => r.link.down('connect timeout'), 5_000);
    };
    r.clock.advance(MINUTE + 5_000 + MINUTE);
    assert.deepEqual(
      r
        .dialTimes()
        .slice(1)
        .map((t) => t - loss),
      [MINUTE, 2 * MINUTE + 5_000],
    );
  });

  test('each transition is one log line `from → to` with the cause', () => {
    const r = rig();
    activeThenLost(r);
    r.clock.advance(3 * MINUTE);
    const lines = r.lines().filter((l) => l.event === 'state');
    assert.deepEqual(
      lines.map((l) => l.msg),
      ['connecting → active', 'active → reconnecting', 'reconnecting → standby', 'standby → muted'],
    );
    assert.equal(lines[1]?.cause, 'connection closed by the collector');
  });
});

describe('Link on a fake clock: the whatap profile and stopped', () => {
  test('three attempts 5–10 s apart, then stopped with no timer left; nothing more happens', () => {
    const draws = [0, 0.5, 0.99999];
    const r = rig({ schedule: PROFILES.whatap.reconnect_schedule, random: () => draws.shift() ?? 0 });
    activeThenLost(r);
    const loss = r.at();
    r.clock.advance(30_000);
    const after = r
      .dialTimes()
      .slice(1)
      .map((t) => t - loss);
    assert.deepEqual(after, [5_000, 5_000 + 7_500, 5_000 + 7_500 + 10_000]);
    assert.equal(r.holder.state, 'stopped');
    assert.deepEqual(
      r.changes.slice(1).map((c) => [c.at - loss, c.to]),
      [
        [0, 'reconnecting'],
        [22_500, 'muted'],
        [22_500, 'stopped'],
      ],
    );
    assert.match(r.changes[3]?.cause ?? '', /^gave up after 3 reconnect attempts \(connect ECONNREFUSED\); apm-sidecar reconnect or SIGHUP tries again$/);
    assert.equal(r.clock.pending, 0, 'stopped: no attempt and no standby timer is set');
    assert.equal(r.link.status().nextAttemptAt, null);
    r.clock.advance(24 * 3600_000);
    assert.equal(r.carrier.dials.length, 4, 'a day later: still the first dial and three attempts');
    assert.equal(r.changes.length, 4);
  });

  test('delays drawn by Math.random stay within 5000–10000 ms', () => {
    for (let run = 0; run < 20; run++) {
      const r = rig({ schedule: PROFILES.whatap.reconnect_schedule });
      activeThenLost(r);
      r.clock.advance(40_000);
      const times = [r.at() - 40_000, ...r.dialTimes().slice(1)];
      assert.equal(times.length, 4);
      for (let i = 1; i < times.length; i++) {
        const gap = (times[i] as number) - (times[i - 1] as number);
        assert.ok(gap >= 5_000 && gap <= 10_000, `gap ${gap} within 5000–10000 ms`);
      }
      assert.equal(r.holder.state, 'stopped');
    }
  });

  test('operator reconnect from stopped: tries at once, and standby and mute are counted again from then', () => {
    const r = rig({ schedule: PROFILES.whatap.reconnect_schedule, random: () => 0 });
    activeThenLost(r);
    r.clock.advance(20_000);
    assert.equal(r.holder.state, 'stopped');
    const dialsBefore = r.carrier.dials.length;
    const asked = r.at();
    const reply = r.link.reconnect();
    assert.deepEqual(reply, { ok: true, message: 'reconnecting to 10.0.0.1:6600' });
    assert.equal(r.carrier.dials.length, dialsBefore + 1, 'one attempt at once');
    assert.equal(r.changes.at(-1)?.to, 'reconnecting', 'ever active: reconnecting');
    assert.equal(r.changes.at(-1)?.cause, 'reconnect requested');
    r.clock.advance(15_000);
    // The failed attempt at once is round 1, then 5000 ms later round 2, 5000 more round 3: muted, then stopped again.
    assert.deepEqual(
      r
        .dialTimes()
        .slice(dialsBefore)
        .map((t) => t - asked),
      [0, 5_000, 10_000, 15_000],
    );
    assert.deepEqual(
      r.changes.slice(-3).map((c) => [c.at - asked, c.to]),
      [
        [0, 'reconnecting'],
        [10_000, 'muted'],
        [15_000, 'stopped'],
      ],
    );
  });

  test('operator reconnect from stopped before any session was active: connecting', () => {
    const r = rig({ schedule: '1x100,stop', muteAfterAttempts: 0 });
    r.link.start(r.carrier);
    r.clock.advance(100);
    assert.equal(r.holder.state, 'stopped');
    r.carrier.reachable = true;
    r.link.reconnect();
    assert.deepEqual(
      r.changes.map((c) => c.to),
      ['stopped', 'connecting', 'active'],
    );
  });

  test('operator reconnect while connected or connecting says so and changes nothing', () => {
    const r = rig();
    r.carrier.reachable = true;
    r.link.start(r.carrier);
    assert.deepEqual(r.link.reconnect(), { ok: true, message: 'already connected to 10.0.0.1:6600' });
    assert.equal(r.carrier.dials.length, 1);
  });
});

describe('Link: session active from any state', () => {
  for (const target of ['connecting', 'reconnecting', 'standby', 'muted'] as const) {
    test(`${target} → active when a session becomes active; every timer is cancelled`, () => {
      const r = rig({ schedule: '7x60000,300000', muteAfterAttempts: target === 'standby' ? 0 : 3 });
      if (target === 'connecting') {
        r.carrier.dial = (host) => r.carrier.dials.push({ at: r.clock.now(), host });
        r.link.start(r.carrier);
      } else {
        activeThenLost(r);
        if (target === 'standby') r.clock.advance(MINUTE);
        if (target === 'muted') r.clock.advance(3 * MINUTE);
      }
      assert.equal(r.holder.state, target);
      r.carrier.reachable = true;
      if (target === 'connecting') r.link.up('connected');
      else r.clock.advanceTo(r.clock.nextAt as number);
      assert.equal(r.holder.state, 'active');
      assert.equal(r.clock.pending, 0);
      assert.equal(r.link.status().failedAttempts, 0);
      assert.equal(r.link.status().unreachableSince, null);
    });
  }
  test('stopped → active through an operator reconnect that reaches the collector', () => {
    const r = rig({ schedule: '2x1000,stop' });
    activeThenLost(r);
    r.clock.advance(5_000);
    assert.equal(r.holder.state, 'stopped');
    r.carrier.reachable = true;
    r.link.reconnect();
    assert.equal(r.holder.state, 'active');
    assert.equal(r.clock.pending, 0);
  });
});

describe('Link: hosts, failover and guards', () => {
  test('after a loss every other host is tried at once; a round is every host once', () => {
    const r = rig({ hosts: 3 });
    activeThenLost(r);
    const loss = r.at();
    r.clock.advance(2 * MINUTE);
    assert.deepEqual(
      r.carrier.dials.slice(1).map((d) => [d.at - r.clock.now() + 2 * MINUTE, d.host]),
      [
        [0, 1],
        [0, 2],
        [MINUTE, 0],
        [MINUTE, 1],
        [MINUTE, 2],
        [2 * MINUTE, 0],
        [2 * MINUTE, 1],
        [2 * MINUTE, 2],
      ],
    );
    // The failover round right after the loss counts as the first failed round.
    assert.deepEqual(
      r.changes.slice(1).map((c) => [c.at - loss, c.to]),
      [
        [0, 'reconnecting'],
        [MINUTE, 'standby'],
        [2 * MINUTE, 'muted'],
      ],
    );
  });

  test('a report of down when no attempt is under way changes nothing', () => {
    const r = rig();
    activeThenLost(r);
    const before = r.changes.length;
    r.link.down('late close of an old session');
    r.link.down('late close of an old session');
    assert.equal(r.changes.length, before);
    assert.equal(r.carrier.dials.length, 1);
  });

  test('close cancels every timer and ignores later reports', () => {
    const r = rig();
    r.link.start(r.carrier);
    r.link.close();
    assert.equal(r.clock.pending, 0);
    r.link.up('too late');
    assert.equal(r.holder.state, 'connecting');
    assert.deepEqual(r.link.reconnect(), { ok: false, message: 'shutting down' });
  });
});
