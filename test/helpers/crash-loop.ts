/**
 * A crash loop: `iterations` faults at random moments (a seeded gap under load before each),
 * each followed by the time it took to recover, and the figures of the whole loop.
 */
import type { CrashRig } from './crash-rig';
import { type Figures, recordFigures } from './figures';
import { type Prng, medianMax } from './prng';
import { sleep } from './procs';

export interface Recovery {
  /** From the end of the fault (restart, SIGCONT) to the sidecar `active`. */
  activeMs: number;
  /** From the end of the fault to the collector storing points again (or the app acked again). */
  receivingMs: number;
}

export interface LoopResult {
  iterations: number;
  recoveries: Recovery[];
}

/**
 * Run `step` `iterations` times, each after a random gap in [gapMin, gapMax] ms. A step returns
 * its recovery, or null for an iteration that did not wait for one (a fault during recovery).
 */
export async function crashLoop(
  iterations: number,
  rng: Prng,
  gap: [number, number],
  step: (i: number) => Promise<Recovery | null>,
): Promise<LoopResult> {
  const recoveries: Recovery[] = [];
  for (let i = 0; i < iterations; i++) {
    await sleep(rng.int(gap[0], gap[1]));
    const r = await step(i);
    if (r !== null) recoveries.push(r);
  }
  return { iterations, recoveries };
}

/** The figures of a loop on a rig: recovery medians and maxima, RSS per role, the verdict. */
export function loopFigures(
  file: string,
  rig: CrashRig,
  f: Pick<Figures, 'case' | 'load' | 'fault'> & { lost: number; duplicated: number },
  loop: LoopResult,
  seedValue: number,
  extra: Record<string, number | string | boolean> = {},
): void {
  const active = medianMax(loop.recoveries.map((r) => r.activeMs));
  const receiving = medianMax(loop.recoveries.map((r) => r.receivingMs));
  recordFigures(
    file,
    {
      ...f,
      section: 'crash',
      maxRssMb: rig.maxRss(),
      recoverMs: receiving.max,
      extra: {
        iterations: loop.iterations,
        seed: seedValue,
        activeMedianMs: active.median,
        activeMaxMs: active.max,
        receivingMedianMs: receiving.median,
        receivingMaxMs: receiving.max,
        ...extra,
      },
    },
    seedValue,
  );
}
