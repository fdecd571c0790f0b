/**
 * Crash loops of the sidecar (issue 10, item 2): kill -9 at random moments and a restart on the
 * same socket and data directory; SIGSTOP/SIGCONT at random moments for random lengths. Load
 * apps run throughout and reconnect by themselves; at the end every acked value is at the
 * collector exactly once. `SEED=…` replays the moments.
 */
import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { crashLoop, loopFigures, rssWithinBounds } from '../helpers/crash-loop';
import { CrashRig } from '../helpers/crash-rig';
import { byLevel, seed } from '../helpers/figures';
import { Prng } from '../helpers/prng';
import { sleep } from '../helpers/procs';

const FILE = 'faults/crash-sidecar';
const ITERATIONS = byLevel(3, 50, 200);
const LOAD = '3 apps × 2 series × 50 adds/s, a flush awaited every 100 ms';
let rig: CrashRig | undefined;
afterEach(async () => {
  await rig?.close();
  rig = undefined;
});

test('kill -9 of the sidecar at random moments, restarted on the same socket and data directory: every acked value at the collector exactly once', async () => {
  const s = seed();
  console.log(`# seed ${s}`);
  const rng = new Prng(s);
  const r = await CrashRig.start({ name: 'kill9-sidecar', apps: 3 });
  rig = r;
  let early = 0;
  const loop = await crashLoop(ITERATIONS, rng, [0, 250], async (i) => {
    await r.sidecar.kill('SIGKILL');
    const before = await r.receivedPoints();
    const t0 = Date.now();
    await r.startSidecar();
    // One time in five the next kill comes while this one is still recovering (the gap is the moment).
    if (i < ITERATIONS - 1 && rng.next() < 0.2) {
      early++;
      return null;
    }
    return r.recovery(t0, before);
  });
  const v = await r.drain();
  const rss = loopFigures(
    FILE,
    r,
    { case: 'crash/kill9-sidecar', load: LOAD, fault: 'kill -9 of the sidecar, restart on the same socket + data dir', lost: v.lost, duplicated: v.duplicated },
    loop,
    s,
    { killsBeforeActive: early, unacked: v.unacked },
  );
  assert.equal(v.lost, 0, `seed ${s}: ${JSON.stringify(v.perSeries)}`);
  assert.equal(v.duplicated, 0, `seed ${s}: ${JSON.stringify(v.perSeries)}`);
  rssWithinBounds(rss);
});

test('SIGSTOP/SIGCONT of the sidecar at random moments for 50–1000 ms: every acked value at the collector exactly once', async () => {
  const s = seed();
  console.log(`# seed ${s}`);
  const rng = new Prng(s);
  const r = await CrashRig.start({ name: 'sigstop-sidecar', apps: 3 });
  rig = r;
  const pid = r.sidecar.pid;
  const loop = await crashLoop(ITERATIONS, rng, [0, 250], async () => {
    r.sidecar.child.kill('SIGSTOP');
    await sleep(rng.int(50, 1000));
    const t0 = Date.now();
    r.sidecar.child.kill('SIGCONT');
    return r.recovery(t0, null);
  });
  const v = await r.drain();
  const rss = loopFigures(
    FILE,
    r,
    { case: 'crash/sigstop-sidecar', load: LOAD, fault: 'SIGSTOP of the sidecar for 50–1000 ms, then SIGCONT', lost: v.lost, duplicated: v.duplicated },
    loop,
    s,
    { unacked: v.unacked },
  );
  assert.equal(r.sidecar.pid, pid, 'the same sidecar throughout');
  assert.equal(v.lost, 0, `seed ${s}: ${JSON.stringify(v.perSeries)}`);
  assert.equal(v.duplicated, 0, `seed ${s}: ${JSON.stringify(v.perSeries)}`);
  rssWithinBounds(rss);
});
