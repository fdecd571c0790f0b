/**
 * Randomised end-to-end runs (issue 10, item 5): a seeded plan mixes load (apps starting,
 * stopping, killed, paused), collector outages (killed, paused, or cut off by a Gate) and
 * kills, SIGTERMs and pauses of the sidecar over the run; then everything comes back and every
 * acked value must be at the collector exactly once. The seed is always printed; a failing
 * run's message carries its seed and step list, and `SEED=… make soak` (or the command in
 * RELIABILITY.md) replays it.
 */
import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { rssWithinBounds } from '../helpers/crash-loop';
import { CrashRig } from '../helpers/crash-rig';
import { byLevel, recordFigures, seed } from '../helpers/figures';
import { Gate } from '../helpers/outage';
import { describeStep, finalModel, heal, kindCounts, plan, runPlan, settingsFor } from '../helpers/scenario';

const FILE = 'faults/scenario-random';
const APPS = 3;
let rig: CrashRig | undefined;
let gate: Gate | undefined;
afterEach(async () => {
  await gate?.cut();
  await rig?.close();
  rig = undefined;
  gate = undefined;
});

test('a seeded random mix of load, outages, kills and pauses: every acked value at the collector exactly once', async () => {
  const s = seed();
  const durationMs = byLevel(8_000, 60_000, 240_000);
  const steps = plan(s, durationMs, APPS);
  const settings = settingsFor(s);
  console.log(`# scenario seed ${s}: ${JSON.stringify(settings)}, ${steps.length} steps over ${durationMs} ms (${kindCounts(steps)})`);
  const stepList = () => `seed ${s}, replay with SEED=${s}; sidecar ${JSON.stringify(settings)}; steps:\n${steps.map(describeStep).join('\n')}`;

  const r = await CrashRig.start({
    name: 'scenario',
    apps: APPS,
    sidecar: settings,
    via: async (port) => {
      gate = new Gate(port);
      return gate.open();
    },
  });
  rig = r;
  const world = { rig: r, upstream: gate as Gate };
  const run = await runPlan(world, steps);
  assert.equal(run.failed, null, `step ${run.done + 1} failed: ${JSON.stringify(run.failed)}\n${stepList()}`);
  const healedAt = Date.now();
  await heal(world, finalModel(steps, APPS));
  const v = await r.drain();
  const recoverMs = Date.now() - healedAt;
  const rss = r.maxRss();
  recordFigures(
    FILE,
    {
      case: 'scenario/random-mix',
      section: 'scenario',
      load: `up to ${APPS} apps × 2 series × 50 adds/s`,
      fault: `${steps.length} seeded steps over ${durationMs / 1000} s: ${kindCounts(steps)}; queue1 of ${settings.net_send_queue1_size} packs`,
      lost: v.lost,
      duplicated: v.duplicated,
      maxRssMb: rss,
      recoverMs,
      extra: { seed: s, steps: steps.length, unacked: v.unacked, drained: v.drained },
    },
    s,
  );
  assert.equal(v.lost, 0, `${JSON.stringify(v.perSeries)}\n${stepList()}`);
  assert.equal(v.duplicated, 0, `${JSON.stringify(v.perSeries)}\n${stepList()}`);
  rssWithinBounds(rss);
});
