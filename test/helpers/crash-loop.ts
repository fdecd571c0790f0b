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
export async function crashLoop(iterations: number, rng: Prng, gap: [number, number], step: (i: number) => Promise<Recovery | null>): Promise<LoopResult> {
  const recoveries: Recovery[] = [];
  for (let i = 0; i < iterations; i++) {
    await sleep(rng.int(gap[0], gap[1]));
    const r = await step(i);
    if (r !== null) recoveries.push(r);
  }
  return { iterations, recoveries };
}

/**
 * RSS bounds per role, in MiB. At this load a sidecar or collector runs at about 70 MiB and a load
 * app at about 45; the bounds are roughly three times that, far below what unbounded buffering
 * across dozens of restarts or pauses would reach, and far above what GC timing on a loaded
 * machine moves.
 */
export const RSS_BOUNDS_MB: Record<string, number> = { sidecar: 200, collector: 250, app: 150 };

/** Every role's max RSS within RSS_BOUNDS_MB. */
export function rssWithinBounds(max: Record<string, number>): void {
  for (const [role, mb] of Object.entries(max)) {
    const bound = RSS_BOUNDS_MB[role];
    if (bound !== undefined && mb > bound) throw new Error(`${role} RSS ${mb} MiB is over its bound of ${bound} MiB`);
  }
}

/** The figures of a loop on a rig: recovery medians and maxima, RSS per role, the verdict; returns the RSS maxima. */
export function loopFigures(
  file: string,
  rig: CrashRig,
  f: Pick<Figures, 'case' | 'load' | 'fault'> & { lost: number; duplicated: number },
  loop: LoopResult,
  seedValue: number,
  extra: Record<string, number | string | boolean> = {},
): Record<string, number> {
  const maxRssMb = rig.maxRss();
  const active = medianMax(loop.recoveries.map((r) => r.activeMs));
  const receiving = medianMax(loop.recoveries.map((r) => r.receivingMs));
  recordFigures(
    file,
    {
      ...f,
      section: 'crash',
      maxRssMb,
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
  return maxRssMb;
}
