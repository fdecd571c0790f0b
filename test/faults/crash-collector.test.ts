/**
 * Crash loops of the collector (issue 10, item 2): kill -9 at random moments and a restart on
 * the same port and data directory; SIGSTOP/SIGCONT at random moments for random lengths, some
 * longer than the sidecar's tcp_so_timeout, so the sidecar gives up on a session whose frames the
 * collector stores when it wakes, and sends them again on the next. Every acked value must be
 * at the collector exactly once. `SEED=…` replays the moments.
 */
import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { crashLoop, loopFigures, rssWithinBounds } from '../helpers/crash-loop';
import { CrashRig } from '../helpers/crash-rig';
import { byLevel, seed } from '../helpers/figures';
import { Prng } from '../helpers/prng';
import { sleep } from '../helpers/procs';

const FILE = 'faults/crash-collector';
const ITERATIONS = byLevel(3, 50, 200);
const LOAD = '3 apps × 2 series × 50 adds/s, a flush awaited every 100 ms';
let rig: CrashRig | undefined;
afterEach(async () => {
  await rig?.close();
  rig = undefined;
});

test('kill -9 of the collector at random moments, restarted on the same port and data directory: every acked value at the collector exactly once', async () => {
  const s = seed();
  console.log(`# seed ${s}`);
  const rng = new Prng(s);
  const r = await CrashRig.start({ name: 'kill9-collector', apps: 3 });
  rig = r;
  let early = 0;
  const loop = await crashLoop(ITERATIONS, rng, [0, 250], async (i) => {
    await r.collector.kill('SIGKILL');
    await sleep(rng.int(0, 300));
    const t0 = Date.now();
    await r.startCollector();
    if (i < ITERATIONS - 1 && rng.next() < 0.2) {
      early++;
      return null;
    }
    return r.recovery(t0, 0);
  });
  const v = await r.drain();
  const rss = loopFigures(
    FILE,
    r,
    {
      case: 'crash/kill9-collector',
      load: LOAD,
      fault: 'kill -9 of the collector, down 0–300 ms, restart on the same port + data dir',
      lost: v.lost,
      duplicated: v.duplicated,
    },
    loop,
    s,
    { killsBeforeActive: early, unacked: v.unacked },
  );
  assert.equal(v.lost, 0, `seed ${s}: ${JSON.stringify(v.perSeries)}`);
  assert.equal(v.duplicated, 0, `seed ${s}: ${JSON.stringify(v.perSeries)}`);
  rssWithinBounds(rss);
});

test('SIGSTOP/SIGCONT of the collector at random moments for 50–1600 ms, past tcp_so_timeout (800 ms) at times: every acked value at the collector exactly once', async () => {
  const s = seed();
  console.log(`# seed ${s}`);
  const rng = new Prng(s);
  const r = await CrashRig.start({ name: 'sigstop-collector', apps: 3, sidecar: { tcp_so_timeout: 800 } });
  rig = r;
  let pastTimeout = 0;
  const loop = await crashLoop(ITERATIONS, rng, [0, 250], async () => {
    const pauseMs = rng.int(50, 1600);
    if (pauseMs > 800) pastTimeout++;
    r.collector.child.kill('SIGSTOP');
    await sleep(pauseMs);
    const t0 = Date.now();
    r.collector.child.kill('SIGCONT');
    return r.recovery(t0, null);
  });
  const v = await r.drain();
  const rss = loopFigures(
    FILE,
    r,
    {
      case: 'crash/sigstop-collector',
      load: LOAD,
      fault: 'SIGSTOP of the collector for 50–1600 ms (sidecar tcp_so_timeout 800 ms), then SIGCONT',
      lost: v.lost,
      duplicated: v.duplicated,
    },
    loop,
    s,
    { stopsPastSoTimeout: pastTimeout, unacked: v.unacked },
  );
  assert.equal(v.lost, 0, `seed ${s}: ${JSON.stringify(v.perSeries)}`);
  assert.equal(v.duplicated, 0, `seed ${s}: ${JSON.stringify(v.perSeries)}`);
  rssWithinBounds(rss);
});
