// Slow and one-way stalled links between the sidecar and the collector, through the fault proxy
// (test/helpers/fault-proxy.ts): latency, bandwidth, a stall in one direction. Each case runs
// two load apps through one sidecar (transport tcp) and one collector, and asserts:
//   - every series: acked ≤ collector ≤ recorded (nothing acked lost, nothing counted twice)
//   - the sidecar reaches the state the fault calls for within its configured timeout
//     (tcp_so_timeout, the collector's idle_ping_ms)
//   - the counters name the cause (session errors by code, the proxy's own counts), and the
//     sidecar dropped nothing (every fault is far shorter than retention_ms)
//   - every process stays within its memory bound (MEMORY_BOUND_MB in helpers/proxy-rig.ts)
import assert from 'node:assert/strict';
import { byLevel } from '../helpers/figures';
import { sidecarStatus } from '../helpers/outage';
import { sleep } from '../helpers/procs';
import { PING_DETECT_MS, type ProxyCase, SO_DETECT_MS, delta, describeProxyCases, reached, soTimeoutCause, stayedActive } from '../helpers/proxy-rig';

const FILE = 'faults/proxy-link';
/** How long a fault that brings no state change is held. */
const HOLD_MS = byLevel(1000, 5000, 20000);
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
    title: 'bandwidth 300 B/s both ways (below the load’s ~800 B/s): the proxy holds the rate, the sidecar stays active',
    fault: 'bandwidth 300 bytes/s, both ways (the load needs ~800 B/s upstream)',
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
