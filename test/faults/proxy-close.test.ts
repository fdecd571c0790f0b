// Links that end badly between the sidecar and the collector, through the fault proxy
// (test/helpers/fault-proxy.ts): half-open links (one direction silently dead), connections closed
// after N bytes, resets, and a FIN that arrives late. Each case runs two load apps through one
// sidecar (transport tcp) and one collector, and asserts:
//   - every series: acked ≤ collector ≤ recorded (nothing acked lost, nothing counted twice)
//   - the sidecar reaches the state the fault calls for within its configured timeout
//     (tcp_so_timeout, the collector's idle_ping_ms, mute_after_attempts)
//   - the counters name the cause (session errors by code, the proxy's own counts), and the
//     sidecar dropped nothing (every fault is far shorter than retention_ms)
//   - every process stays within its memory bound (MEMORY_BOUND_MB in helpers/proxy-rig.ts)
import assert from 'node:assert/strict';
import { byLevel } from '../helpers/figures';
import { waitFor } from '../helpers/procs';
import { PING_DETECT_MS, type ProxyCase, RIG, SO_DETECT_MS, delta, describeProxyCases, reached, soTimeoutCause } from '../helpers/proxy-rig';

const FILE = 'faults/proxy-close';
/** Connections close-after cuts before it is lifted. */
const CUTS = byLevel(3, 10, 50);

function sum(o: Record<string, number>): number {
  return Object.values(o).reduce((a, v) => a + v, 0);
}

const CASES: (ProxyCase & { title: string })[] = [
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

describeProxyCases('links that end badly between the sidecar and the collector', FILE, 'pclose', {}, CASES);
