// Whole upstream frames dropped, duplicated and reordered on the way from the sidecar to the
// collector (the fault proxy cuts on the frame boundaries and picks sealed frames by counter).
// Frame counters must be exactly consecutive: the collector ends the session with a typed error
// (ERR_FRAME_GAP for a missing or overtaken frame, ERR_REPLAY for a repeated one), counts it
// (/api/stats rejected.frameGap, rejected.replay) and tells the sidecar, which counts the session's
// end by code and resends everything unacked on the next session. Storage by pack identity keeps
// the resent values from counting twice.
import assert from 'node:assert/strict';
import { getJson } from '../helpers/collector';
import { byLevel } from '../helpers/figures';
import { waitFor } from '../helpers/procs';
import { type Counts, type ProxyCase, type Rig, delta, describeProxyCases, stateChanges } from '../helpers/proxy-rig';

const FILE = 'faults/proxy-frames';
/** Sessions each frame toxic ends before it is lifted. */
const ENDED = byLevel(2, 5, 20);
const EVERY = 5;

async function rejected(rig: Rig, reason: string): Promise<number> {
  const stats = (await getJson(rig.collector.httpPort, '/api/stats', rig.collector.httpHost)).body as { rejected: Record<string, number> };
  return stats.rejected[reason] ?? 0;
}

/** A frame toxic holds until the collector has ended ENDED sessions for `reason`. */
function frameCase(
  name: 'frame-drop' | 'frame-duplicate' | 'frame-reorder',
  reason: 'frameGap' | 'replay',
  code: string,
  /** The code the sidecar counts the session's end by: null where the collector closes without saying why. */
  sidecarCode: string | null,
  did: (c: Counts) => number,
  title: string,
  fault: string,
): ProxyCase & { title: string } {
  return {
    id: `proxy/${name}`,
    title,
    fault: `${fault} (every session's frame ${EVERY}), until the collector ended ${ENDED} sessions`,
    apply: (rig) => rig.proxy.set(name, { every: EVERY }),
    async during(rig, t0) {
      const r0 = await rejected(rig, reason);
      await waitFor(`the collector to end ${ENDED} sessions with ${code}`, async () => (await rejected(rig, reason)) - r0 >= ENDED, 10000 + ENDED * 3000);
      const lost = stateChanges(rig.sidecar, t0).find((c) => c.to === 'reconnecting');
      assert.ok(lost !== undefined, 'the sidecar lost its session');
      return { detectMs: lost.at - t0 };
    },
    causes(b, a) {
      const n = delta(b.rejected, a.rejected)[reason] ?? 0;
      const done = did(a) - did(b);
      assert.ok(n >= ENDED && n <= done, `${n} sessions rejected for ${reason}, ${done} frames altered by the proxy`);
      const errs = delta(b.sessionErrors, a.sessionErrors);
      if (sidecarCode === null) {
        // A replayed frame may be anyone's on the path: the collector ends the session without an oracle.
        assert.deepEqual(errs, {}, 'the sidecar saw the session closed, with no code');
        assert.ok(a.sessions - b.sessions >= ENDED, 'and started a new one each time');
      } else {
        // The collector's sealed Error names the code.
        assert.ok((errs[sidecarCode] ?? 0) >= 1 && (errs[sidecarCode] ?? 0) <= n, `session errors ${JSON.stringify(errs)}`);
      }
    },
  };
}

const CASES = [
  frameCase(
    'frame-drop',
    'frameGap',
    'ERR_FRAME_GAP',
    'ERR_FRAME_GAP',
    (c) => c.proxy.framesDropped,
    'a dropped frame: ERR_FRAME_GAP at the collector and the sidecar, resent, stored once',
    'sidecar → collector: a sealed frame dropped',
  ),
  frameCase(
    'frame-duplicate',
    'replay',
    'ERR_REPLAY',
    null,
    (c) => c.proxy.framesDuplicated,
    'a duplicated frame: ERR_REPLAY at the collector (the sidecar sees a plain close), the copy never stored, every value once',
    'sidecar → collector: a sealed frame sent twice',
  ),
  frameCase(
    'frame-reorder',
    'frameGap',
    'ERR_FRAME_GAP',
    'ERR_FRAME_GAP',
    (c) => c.proxy.framesReordered,
    'two frames swapped: ERR_FRAME_GAP for the one that overtook, resent in order, every value once',
    'sidecar → collector: a sealed frame sent after its successor',
  ),
];

describeProxyCases('whole frames dropped, duplicated and reordered between the sidecar and the collector', FILE, 'pframes', {}, CASES);
