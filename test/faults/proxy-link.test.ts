// Network faults between the sidecar and the collector, through the fault proxy
// (test/helpers/fault-proxy.ts): latency, bandwidth, stall (both ways, one way), half-open links,
// connections closed after N bytes, resets, and a FIN that arrives late. Each case runs two load
// apps through one sidecar (transport tcp) and one collector, and asserts:
//   - every series: acked ≤ collector ≤ recorded (nothing acked lost, nothing counted twice)
//   - the sidecar reaches the state the fault calls for within its configured timeout
//     (tcp_so_timeout, the collector's idle_ping_ms, standby_after_ms, mute_after_attempts)
//   - the counters name the cause (session errors by code, the proxy's own counts), and the
//     sidecar dropped nothing (every fault is far shorter than retention_ms)
//   - every process stays within its memory bound (MEMORY_BOUND_MB in helpers/proxy-rig.ts)
import assert from 'node:assert/strict';
import { byLevel } from '../helpers/figures';
import { sidecarStatus } from '../helpers/outage';
import { sleep, waitFor } from '../helpers/procs';
import { type ProxyCase, RIG, type Rig, delta, describeProxyCases, reached, stateChanges } from '../helpers/proxy-rig';

const FILE = 'faults/proxy-link';
/** How long a fault that brings no state change is held. */
const HOLD_MS = byLevel(1000, 5000, 20000);
/** Connections close-after cuts before it is lifted. */
const CUTS = byLevel(3, 10, 50);
/** The session's end the sidecar logged, as the cause of its state change. */
const soTimeoutCause = /tcp_so_timeout/;
/** Detection bound: the configured timeout, its check interval (a third of it) and slack for a loaded machine. */
const SO_DETECT_MS = RIG.soTimeoutMs + RIG.soTimeoutMs / 3 + 2000;
/** The collector closes a session whose ping goes unanswered after 2 × idle_ping_ms; the sidecar's own tcp_so_timeout may come first. */
const PING_DETECT_MS = Math.min(2 * RIG.idlePingMs, RIG.soTimeoutMs) + RIG.soTimeoutMs / 3 + 2000;

function stayedActive(rig: Rig, t0: number): void {
  const changes = stateChanges(rig.sidecar, t0);
  assert.deepEqual(changes, [], 'the sidecar stayed active');
}

function sum(o: Record<string, number>, keys: string[] = Object.keys(o)): number {
  return keys.reduce((a, k) => a + (o[k] ?? 0), 0);
}

const CASES: (ProxyCase & { title: string })[] = [
  {
    id: 'proxy/latency',
    title: 'latency 80 ± 40 ms both ways: the sidecar stays active and every value counts once',
    fault: 'latency 80 ms ± 40 ms, both ways',
    apply: (rig) => rig.proxy.set('latency', { ms: 80, jitter: 40 }),
    async during(rig, t0) {
      await sleep(HOLD_MS);
      stayedActive(rig, t0);
      const s = await sidecarStatus(rig.sidecar.socket);
      return { heldMs: HOLD_MS, inFlightFrames: s.upstream.inFlightFrames as number };
    },
    causes(b, a) {
      assert.deepEqual(delta(b.sessionErrors, a.sessionErrors), {}, 'no session ended');
      assert.equal(a.sessions, b.sessions, 'one session throughout');
    },
  },
  {
    id: 'proxy/bandwidth',
    title: 'bandwidth 300 B/s both ways (below the load’s ~650 B/s): the proxy holds the rate, the sidecar stays active',
    fault: 'bandwidth 300 bytes/s, both ways (the load needs ~650 B/s upstream)',
    apply: (rig) => rig.proxy.set('bandwidth', { bytesPerSec: 300 }),
    async during(rig, t0) {
      const up0 = rig.proxy.stats.bytes.up;
      await sleep(HOLD_MS);
      const rate = Math.round(((rig.proxy.stats.bytes.up - up0) * 1000) / (Date.now() - t0));
      stayedActive(rig, t0);
      // One slice (1/20 s of the rate) may go ahead of the schedule.
      assert.ok(rate <= 300 * 1.1 + 20, `upstream ran at ${rate} B/s`);
      return { heldMs: HOLD_MS, upBytesPerSec: rate };
    },
    causes(b, a) {
      assert.deepEqual(delta(b.sessionErrors, a.sessionErrors), {}, 'no session ended');
    },
  },
  {
    id: 'proxy/stall',
    title: 'stall both ways: reconnecting within tcp_so_timeout, standby after standby_after_ms, active after the stall',
    fault: 'stall both ways (accepted, never read) until the sidecar is in standby',
    apply: (rig) => rig.proxy.set('stall', {}),
    async during(rig, t0) {
      const lost = await reached(rig.sidecar, 'reconnecting', t0, SO_DETECT_MS + 5000);
      assert.match(lost.cause, soTimeoutCause);
      assert.ok(lost.at - t0 <= SO_DETECT_MS, `lost after ${lost.at - t0} ms`);
      const sb = await reached(rig.sidecar, 'standby', lost.at, RIG.standbyAfterMs + 5000);
      assert.ok(sb.at - lost.at >= RIG.standbyAfterMs - 50, `standby ${sb.at - lost.at} ms after the loss`);
      return { detectMs: lost.at - t0, standbyAfterLossMs: sb.at - lost.at };
    },
    causes(b, a) {
      assert.ok((delta(b.sessionErrors, a.sessionErrors).ERR_SO_TIMEOUT ?? 0) >= 1, 'counted as ERR_SO_TIMEOUT');
    },
  },
  {
    id: 'proxy/stall-upstream',
    title: 'stall sidecar → collector only: the unanswered ping ends the session, the sidecar reconnects',
    fault: 'stall sidecar → collector; collector → sidecar flows',
    apply: (rig) => rig.proxy.set('stall', {}, 'up'),
    async during(rig, t0) {
      const lost = await reached(rig.sidecar, 'reconnecting', t0, PING_DETECT_MS + 5000);
      assert.ok(lost.at - t0 <= PING_DETECT_MS, `lost after ${lost.at - t0} ms`);
      return { detectMs: lost.at - t0, detectedBy: soTimeoutCause.test(lost.cause) ? 'sidecar tcp_so_timeout' : 'collector ping' };
    },
    causes(b, a, rig) {
      const so = delta(b.sessionErrors, a.sessionErrors).ERR_SO_TIMEOUT ?? 0;
      const pings = rig.collector.lines.filter((l) => typeof l.msg === 'string' && l.msg.includes('no answer to a ping')).length;
      assert.ok(so + pings >= 1, 'a timeout (the sidecar’s read or the collector’s ping) ended the session');
    },
  },
  {
    id: 'proxy/stall-downstream',
    title: 'stall collector → sidecar only: ERR_SO_TIMEOUT; what the collector stored without the sidecar knowing counts once',
    fault: 'stall collector → sidecar (acks held); sidecar → collector flows',
    apply: (rig) => rig.proxy.set('stall', {}, 'down'),
    async during(rig, t0) {
      const lost = await reached(rig.sidecar, 'reconnecting', t0, SO_DETECT_MS + 5000);
      assert.match(lost.cause, soTimeoutCause);
      assert.ok(lost.at - t0 <= SO_DETECT_MS, `lost after ${lost.at - t0} ms`);
      return { detectMs: lost.at - t0 };
    },
    causes(b, a) {
      assert.ok((delta(b.sessionErrors, a.sessionErrors).ERR_SO_TIMEOUT ?? 0) >= 1, 'counted as ERR_SO_TIMEOUT');
    },
  },
  {
    id: 'proxy/half-open-upstream',
    title: 'half-open, sidecar → collector dead: the collector’s unanswered ping ends the session',
    fault: 'sidecar → collector silently dead (bytes and FIN vanish); collector → sidecar flows',
    apply: (rig) => rig.proxy.set('half-open', {}, 'up'),
    async during(rig, t0) {
      const lost = await reached(rig.sidecar, 'reconnecting', t0, PING_DETECT_MS + 5000);
      assert.ok(lost.at - t0 <= PING_DETECT_MS, `lost after ${lost.at - t0} ms`);
      return { detectMs: lost.at - t0, detectedBy: soTimeoutCause.test(lost.cause) ? 'sidecar tcp_so_timeout' : 'collector ping' };
    },
    causes(b, a) {
      assert.ok(a.proxy.discarded.up > b.proxy.discarded.up, 'the dead direction swallowed bytes');
      assert.ok(a.sessions > b.sessions, 'a new session');
    },
  },
  {
    id: 'proxy/half-open-downstream',
    title: 'half-open, collector → sidecar dead: ERR_SO_TIMEOUT; acks lost on the way, resent values count once',
    fault: 'collector → sidecar silently dead (acks, pings and FIN vanish); sidecar → collector flows',
    apply: (rig) => rig.proxy.set('half-open', {}, 'down'),
    async during(rig, t0) {
      const lost = await reached(rig.sidecar, 'reconnecting', t0, SO_DETECT_MS + 5000);
      assert.match(lost.cause, soTimeoutCause);
      assert.ok(lost.at - t0 <= SO_DETECT_MS, `lost after ${lost.at - t0} ms`);
      return { detectMs: lost.at - t0 };
    },
    causes(b, a) {
      assert.ok((delta(b.sessionErrors, a.sessionErrors).ERR_SO_TIMEOUT ?? 0) >= 1, 'counted as ERR_SO_TIMEOUT');
      assert.ok(a.proxy.discarded.down > b.proxy.discarded.down, 'the dead direction swallowed bytes');
    },
  },
  {
    id: 'proxy/close-after',
    title: 'every connection closed after 1200 bytes (frames cut anywhere): sessions churn, every value counts once',
    fault: `close after 1200 bytes either way, on every connection, until ${CUTS} were cut`,
    apply: (rig) => rig.proxy.set('close-after', { bytes: 1200 }),
    async during(rig) {
      const c0 = rig.proxy.stats.closedAfterBytes;
      await waitFor(`${CUTS} connections cut`, () => rig.proxy.stats.closedAfterBytes - c0 >= CUTS, 10000 + CUTS * 3000);
      return { cuts: rig.proxy.stats.closedAfterBytes - c0 };
    },
    causes(b, a) {
      assert.ok(a.sessions - b.sessions >= CUTS - 1, `${a.sessions - b.sessions} new sessions`);
    },
  },
  {
    id: 'proxy/reset',
    title: 'every connection reset at once: ECONNRESET counted, muted after mute_after_attempts, active after',
    fault: 'RST to both peers on every connection as soon as it opens, until the sidecar is muted',
    apply: (rig) => rig.proxy.set('reset', { afterMs: 0 }),
    async during(rig, t0) {
      const lost = await reached(rig.sidecar, 'reconnecting', t0, 5000);
      // Each round fails at once; rounds are reconnect_schedule (200 ms) apart.
      const muted = await reached(rig.sidecar, 'muted', lost.at, RIG.muteAfterAttempts * 200 + 5000);
      assert.match(muted.cause, new RegExp(`${RIG.muteAfterAttempts} failed attempts`));
      return { detectMs: lost.at - t0, mutedAfterLossMs: muted.at - lost.at };
    },
    causes(b, a) {
      const errs = delta(b.sessionErrors, a.sessionErrors);
      const resets = a.proxy.resets - b.proxy.resets;
      // A write racing the RST may see EPIPE instead; nothing else ended these sessions.
      assert.deepEqual(
        Object.keys(errs).filter((k) => k !== 'ECONNRESET' && k !== 'EPIPE'),
        [],
        `session errors ${JSON.stringify(errs)}`,
      );
      const n = sum(errs);
      assert.ok(n >= 1 + RIG.muteAfterAttempts && n <= resets, `${n} sessions ended by a reset, ${resets} resets sent`);
    },
  },
  {
    id: 'proxy/slow-close',
    title: 'FIN delayed 2 s: the sidecar drops a dead session and is active on a new one before the old one’s FIN arrives',
    fault: 'collector → sidecar dead until the sidecar gives up the session; every FIN passed on 2000 ms late',
    apply(rig) {
      rig.proxy.set('slow-close', { ms: 2000 });
      rig.proxy.set('half-open', {}, 'down');
    },
    async during(rig, t0) {
      const lost = await reached(rig.sidecar, 'reconnecting', t0, SO_DETECT_MS + 5000);
      rig.proxy.clear('half-open');
      const back = await reached(rig.sidecar, 'active', lost.at, 5000);
      const fin = await waitFor(
        'the old session’s FIN to reach the collector',
        () => (rig.proxy.stats.lastFinAt.up > lost.at ? rig.proxy.stats.lastFinAt.up : 0),
        10000,
      );
      assert.ok(back.at < fin, 'the new session was active while the old one was still open at the collector');
      return { detectMs: lost.at - t0, activeBeforeFinMs: fin - back.at };
    },
    causes(b, a) {
      assert.ok(a.proxy.fins.up > b.proxy.fins.up, 'the FIN was passed on');
      assert.ok(a.sessions > b.sessions, 'a new session');
    },
  },
];

describeProxyCases('fault proxy between the sidecar and the collector', FILE, 'plink', {}, CASES);
