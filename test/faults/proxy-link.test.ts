// Slow and stalled links between the sidecar and the collector, through the fault proxy
// (test/helpers/fault-proxy.ts): latency, bandwidth, stall (both ways, one way). Each case runs
// two load apps through one sidecar (transport tcp) and one collector, and asserts:
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
import { PING_DETECT_MS, type ProxyCase, RIG, SO_DETECT_MS, delta, describeProxyCases, reached, soTimeoutCause, stayedActive } from '../helpers/proxy-rig';

const FILE = 'faults/proxy-link';
/** How long a fault that brings no state change is held. */
const HOLD_MS = byLevel(1000, 5000, 20000);
/** The slow link after an outage: twice what the load needs upstream, and the outage's length once detected. */
const SLOW_BPS = 1300;
const BACKLOG_MS = byLevel(2500, 6000, 20000);
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
    id: 'proxy/bandwidth-backlog',
    title: 'a slow link after an outage: the backlog, in frames that take longer than tcp_so_timeout to arrive, is delivered without a session ending',
    fault: `stall until the sidecar holds a backlog, then the link back at ${SLOW_BPS} B/s upstream (2× the load's need)`,
    apply: (rig) => rig.proxy.set('stall', {}),
    async during(rig, t0) {
      const lost = await reached(rig.sidecar, 'reconnecting', t0, SO_DETECT_MS + 5000);
      await sleep(BACKLOG_MS);
      const backlog = (await sidecarStatus(rig.sidecar.socket)).retention.packs as number;
      const t1 = Date.now();
      rig.proxy.clear('stall');
      rig.proxy.set('bandwidth', { bytesPerSec: SLOW_BPS }, 'up');
      const back = await reached(rig.sidecar, 'active', t1, SO_DETECT_MS + 5000);
      const errs0 = (await sidecarStatus(rig.sidecar.socket)).upstream.sessionErrors as Record<string, number>;
      // Delivered: no more than the newest interval's packs unacked, on the session that came back.
      const drained = await waitFor(
        'the backlog to be delivered over the slow link',
        async () => {
          const s = await sidecarStatus(rig.sidecar.socket);
          return s.state === 'active' && (s.retention.packs as number) <= 2 && Date.parse(s.upstream.lastAckAt) > back.at ? Date.now() : 0;
        },
        20000,
      ).catch(async (err: Error) => {
        const s = await sidecarStatus(rig.sidecar.socket);
        throw new Error(`${err.message}: ${s.retention.packs} packs retained, session errors ${JSON.stringify(delta(errs0, s.upstream.sessionErrors))}`);
      });
      const errs = delta(errs0, (await sidecarStatus(rig.sidecar.socket)).upstream.sessionErrors as Record<string, number>);
      assert.deepEqual(errs, {}, 'no session ended on the slow link');
      return { detectMs: lost.at - t0, backlogPacks: backlog, drainMs: drained - back.at };
    },
    causes() {},
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
];

describeProxyCases('fault proxy between the sidecar and the collector', FILE, 'plink', {}, CASES);
