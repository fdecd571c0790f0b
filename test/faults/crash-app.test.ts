/**
 * Crash loops of an app (issue 10, item 2): kill -9 of one app at random moments (restarted
 * under the same name and series), and SIGSTOP/SIGCONT of it. The other apps and the sidecar
 * must not notice: the same sidecar process, never out of `active`, and the other apps' series
 * exact (acked = recorded = the collector's sum). The victim's acked values arrive exactly once;
 * what it recorded but was never acked may or may not. `SEED=…` replays the moments.
 */
import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { crashLoop, loopFigures, rssWithinBounds } from '../helpers/crash-loop';
import { CrashRig } from '../helpers/crash-rig';
import { byLevel, seed } from '../helpers/figures';
import type { Verdict } from '../helpers/ledger';
import { Prng } from '../helpers/prng';
import { sleep, waitFor } from '../helpers/procs';

const FILE = 'faults/crash-app';
const ITERATIONS = byLevel(3, 50, 200);
const LOAD = '3 apps × 2 series × 50 adds/s, a flush awaited every 100 ms; app0 is the victim';
let rig: CrashRig | undefined;
afterEach(async () => {
  await rig?.close();
  rig = undefined;
});

const ackedLines = (r: CrashRig): number => r.apps[0]?.lines.filter((l) => l.acked !== undefined).length ?? 0;

/** Time from `t0` until app0 has been acked again (a flush that resolved true after t0). */
async function ackedAgain(r: CrashRig, t0: number): Promise<{ activeMs: number; receivingMs: number }> {
  const n = ackedLines(r);
  await waitFor('app0 to be acked again', () => ackedLines(r) > n, 30000);
  const ms = Date.now() - t0;
  return { activeMs: ms, receivingMs: ms };
}

/** The sidecar and the other apps did not notice: same pid, never out of active, exact totals. */
function unaffected(r: CrashRig, pid: number, v: Verdict): void {
  assert.equal(r.sidecar.pid, pid, 'the same sidecar process throughout');
  const moves = r.sidecar.lines.filter((l) => l.event === 'state' && l.from === 'active');
  assert.deepEqual(moves, [], 'the sidecar never left active');
  for (const i of [1, 2]) {
    for (const name of r.seriesOf(i)) {
      const x = v.perSeries[name];
      assert.ok(x && x.acked === x.recorded && x.collector === x.recorded, `${name} exact: ${JSON.stringify(x)}`);
    }
  }
}

test('kill -9 of an app at random moments: the sidecar and the other apps are unaffected, every acked value at the collector exactly once', async () => {
  const s = seed();
  console.log(`# seed ${s}`);
  const rng = new Prng(s);
  const r = await CrashRig.start({ name: 'kill9-app', apps: 3 });
  rig = r;
  const pid = r.sidecar.pid;
  const loop = await crashLoop(ITERATIONS, rng, [0, 250], async () => {
    await r.endApp(0, 'SIGKILL');
    const t0 = Date.now();
    r.startApp(0);
    return ackedAgain(r, t0);
  });
  const v = await r.drain();
  const rss = loopFigures(
    FILE,
    r,
    { case: 'crash/kill9-app', load: LOAD, fault: 'kill -9 of app0, restarted at once', lost: v.lost, duplicated: v.duplicated },
    loop,
    s,
    { appRuns: r.appRuns(0), unacked: v.unacked },
  );
  assert.equal(v.lost, 0, `seed ${s}: ${JSON.stringify(v.perSeries)}`);
  assert.equal(v.duplicated, 0, `seed ${s}: ${JSON.stringify(v.perSeries)}`);
  rssWithinBounds(rss);
  unaffected(r, pid, v);
});

test('SIGSTOP/SIGCONT of an app at random moments for 50–1000 ms: the sidecar and the other apps are unaffected, every acked value at the collector exactly once', async () => {
  const s = seed();
  console.log(`# seed ${s}`);
  const rng = new Prng(s);
  const r = await CrashRig.start({ name: 'sigstop-app', apps: 3 });
  rig = r;
  const pid = r.sidecar.pid;
  const loop = await crashLoop(ITERATIONS, rng, [0, 250], async () => {
    const app = r.apps[0];
    app?.child.kill('SIGSTOP');
    await sleep(rng.int(50, 1000));
    const t0 = Date.now();
    app?.child.kill('SIGCONT');
    return ackedAgain(r, t0);
  });
  const v = await r.drain();
  const rss = loopFigures(
    FILE,
    r,
    { case: 'crash/sigstop-app', load: LOAD, fault: 'SIGSTOP of app0 for 50–1000 ms, then SIGCONT', lost: v.lost, duplicated: v.duplicated },
    loop,
    s,
    { unacked: v.unacked },
  );
  assert.equal(v.lost, 0, `seed ${s}: ${JSON.stringify(v.perSeries)}`);
  assert.equal(v.duplicated, 0, `seed ${s}: ${JSON.stringify(v.perSeries)}`);
  rssWithinBounds(rss);
  unaffected(r, pid, v);
});
