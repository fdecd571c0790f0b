// Outages of the link between the sidecar and the collector, through the fault proxy
// (test/helpers/fault-proxy.ts): a stall both ways long enough for standby, and an outage followed
// by a slow link that must carry the backlog. Each case runs two load apps through one sidecar
// (transport tcp) and one collector, and asserts:
//   - every series: acked ≤ collector ≤ recorded (nothing acked lost, nothing counted twice)
//   - the sidecar reaches the state the fault calls for within its configured timeout
//     (tcp_so_timeout, standby_after_ms)
//   - the counters name the cause (session errors by code), and the sidecar dropped nothing
//     (every outage is far shorter than retention_ms)
//   - every process stays within its memory bound (MEMORY_BOUND_MB in helpers/proxy-rig.ts)
import assert from 'node:assert/strict';
import { byLevel } from '../helpers/figures';
import { sidecarStatus } from '../helpers/outage';
import { sleep, waitFor } from '../helpers/procs';
import { type ProxyCase, RIG, SO_DETECT_MS, delta, describeProxyCases, reached, soTimeoutCause } from '../helpers/proxy-rig';

const FILE = 'faults/proxy-outage';
/**
 * The slow link after an outage: about 2.5 × what the load needs upstream (~800 B/s), so the backlog
 * drains in seconds, yet slow enough that a resent frame of the backlog takes longer than
 * tcp_so_timeout to arrive; and how long the outage lasts once detected.
 */
const SLOW_BPS = 2000;
const BACKLOG_MS = byLevel(3500, 6000, 20000);

const CASES: (ProxyCase & { title: string })[] = [
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
    id: 'proxy/bandwidth-backlog',
    title: 'a slow link after an outage: the backlog, in frames that take longer than tcp_so_timeout to arrive, is delivered without a session ending',
    fault: `stall until the sidecar holds a backlog, then the link back at ${SLOW_BPS} B/s upstream (about 2.5 × the load's need)`,
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
];

describeProxyCases('outages of the link between the sidecar and the collector', FILE, 'poutage', {}, CASES);
