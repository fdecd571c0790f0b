// The fault proxy between the shims and the sidecar, on the Unix socket: latency with connections
// cut after N bytes (frames cut anywhere), and a stall (a frozen sidecar, as the shim sees it).
// The shim keeps every durable frame until the sidecar acks it and resends it on the next
// connection; the sidecar de-duplicates by (instance id, seq). The upstream is untouched: the
// sidecar stays active throughout.
import assert from 'node:assert/strict';
import { byLevel } from '../helpers/figures';
import { sidecarStatus } from '../helpers/outage';
import { sleep, waitFor } from '../helpers/procs';
import { type Load, type ProxyCase, type Rig, delta, describeProxyCases, stateChanges } from '../helpers/proxy-rig';

const FILE = 'faults/proxy-ipc';
const CUTS = byLevel(3, 10, 50);
const STALL_MS = byLevel(1500, 5000, 20000);

function ipc(rig: Rig) {
  if (rig.ipcProxy === null) throw new Error('this rig has no IPC proxy');
  return rig.ipcProxy;
}

/** Normal service on the IPC path: every app has had a flush acked after the lift. */
async function appsAckedAgain(_rig: Rig, _lifted: number, load: Load): Promise<number> {
  const before = load.apps.map((a) => a.lines.filter((l) => l.acked !== undefined).length);
  await waitFor(
    'every app to have a flush acked again',
    () => load.apps.every((a, i) => a.lines.filter((l) => l.acked !== undefined).length > (before[i] as number)),
    15000,
  );
  return Date.now();
}

const CASES: (ProxyCase & { title: string })[] = [
  {
    id: 'proxy/ipc-cut',
    title: 'shim ↔ sidecar with 20 ± 10 ms latency, each connection cut after 2000 bytes: shims reconnect and resend, every value once',
    fault: `shim ↔ sidecar (Unix socket): latency 20 ms ± 10 ms, close after 2000 bytes either way, until ${CUTS} connections were cut`,
    apply(rig) {
      ipc(rig).set('latency', { ms: 20, jitter: 10 });
      ipc(rig).set('close-after', { bytes: 2000 });
    },
    async during(rig, t0) {
      const c0 = ipc(rig).stats.closedAfterBytes;
      await waitFor(`${CUTS} shim connections cut`, () => ipc(rig).stats.closedAfterBytes - c0 >= CUTS, 10000 + CUTS * 3000);
      assert.deepEqual(stateChanges(rig.sidecar, t0), [], 'the sidecar stayed active');
      return { cuts: ipc(rig).stats.closedAfterBytes - c0 };
    },
    recovered: appsAckedAgain,
    causes(b, a) {
      const cuts = (a.ipcProxy?.closedAfterBytes ?? 0) - (b.ipcProxy?.closedAfterBytes ?? 0);
      assert.ok((a.ipcProxy?.accepted ?? 0) - (b.ipcProxy?.accepted ?? 0) >= CUTS, 'the shims reconnected after each cut');
      // A cut inside a frame is the sidecar's ERR_FRAME_TRUNCATED on that connection, at most one per cut.
      const errs = delta(b.ipcErrors, a.ipcErrors);
      assert.deepEqual(
        Object.keys(errs).filter((k) => k !== 'ERR_FRAME_TRUNCATED'),
        [],
        `ipc errors ${JSON.stringify(errs)}`,
      );
      assert.ok((errs.ERR_FRAME_TRUNCATED ?? 0) <= cuts, `${errs.ERR_FRAME_TRUNCATED} truncated frames, ${cuts} cuts`);
      assert.deepEqual(delta(b.sessionErrors, a.sessionErrors), {}, 'the upstream session was untouched');
    },
  },
  {
    id: 'proxy/ipc-stall',
    title: 'shim ↔ sidecar stalled (a frozen sidecar as the shim sees it): shims keep recording, everything arrives after',
    fault: `shim ↔ sidecar (Unix socket) stalled both ways for ${STALL_MS} ms`,
    apply: (rig) => ipc(rig).set('stall', {}),
    async during(rig, t0) {
      const r0 = (await sidecarStatus(rig.sidecar.socket)).counters.received.metrics as number;
      await sleep(STALL_MS);
      const r1 = (await sidecarStatus(rig.sidecar.socket)).counters.received.metrics as number;
      // Frames already on their way when the stall began may still land; nothing after.
      assert.ok(r1 - r0 <= 4, `${r1 - r0} metric frames reached the sidecar through the stall`);
      assert.deepEqual(stateChanges(rig.sidecar, t0), [], 'the sidecar stayed active');
      return { stalledMs: STALL_MS };
    },
    recovered: appsAckedAgain,
    causes(b, a) {
      assert.deepEqual(delta(b.sessionErrors, a.sessionErrors), {}, 'the upstream session was untouched');
    },
  },
];

describeProxyCases('the fault proxy between the shims and the sidecar', FILE, 'pipc', { ipc: true }, CASES);
