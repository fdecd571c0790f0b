/**
 * Randomised end-to-end runs: a plan of steps drawn from a seed (scenario-steps.ts has the kinds),
 * run against a crash rig under load, then everything brought back and the exact totals judged.
 * The plan depends on the seed and the duration only, never on timing, so `SEED=…` replays the
 * same steps at the same offsets.
 */
import type { CrashRig } from './crash-rig';
import { Prng } from './prng';
import { sleep } from './procs';
import { type Args, HEAL, type Model, STEP_KINDS, type World } from './scenario-steps';

export interface Step {
  /** Offset from the start of the run, in ms. */
  at: number;
  kind: string;
  args: Args;
}

/**
 * Sidecar settings drawn from the seed too: queue1 from 4 packs (most of an outage waits in the
 * retention only) to the default 512.
 */
export function settingsFor(seedValue: number): Record<string, number> {
  const rng = new Prng(seedValue ^ 0x5eed);
  return { net_send_queue1_size: rng.pick([4, 16, 512]) };
}

/** The plan for `seed`: steps every 100–800 ms over `durationMs`, each one applicable to the state it finds. */
export function plan(seedValue: number, durationMs: number, apps: number): Step[] {
  const rng = new Prng(seedValue);
  let m: Model = { collector: 'up', sidecar: 'up', apps: Array.from({ length: apps }, () => 'up'), link: 'open' };
  const steps: Step[] = [];
  let at = rng.int(100, 800);
  while (at < durationMs) {
    const weights: Record<string, number> = {};
    for (const [name, k] of Object.entries(STEP_KINDS)) weights[name] = k.weight(m);
    const kind = rng.weighted(weights);
    const k = STEP_KINDS[kind];
    if (k === undefined) throw new Error(`no step kind ${kind}`);
    const args = k.args(rng, m);
    steps.push({ at, kind, args });
    m = k.next(m, args);
    at += rng.int(100, 800) + (args.ms ?? 0);
  }
  return steps;
}

/** The state the plan leaves. */
export function finalModel(steps: Step[], apps: number): Model {
  let m: Model = { collector: 'up', sidecar: 'up', apps: Array.from({ length: apps }, () => 'up'), link: 'open' };
  for (const s of steps) m = (STEP_KINDS[s.kind] as (typeof STEP_KINDS)[string]).next(m, s.args);
  return m;
}

export const describeStep = (s: Step): string =>
  `${String(s.at).padStart(6)} ms  ${s.kind}${Object.keys(s.args).length > 0 ? ` ${JSON.stringify(s.args)}` : ''}`;

/** How many steps of each kind, e.g. "app-kill 4, collector-kill 2". */
export function kindCounts(steps: Step[]): string {
  const n = new Map<string, number>();
  for (const s of steps) n.set(s.kind, (n.get(s.kind) ?? 0) + 1);
  return [...n.entries()]
    .sort((a, b) => a[0].localeCompare(b[0]))
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
}

export interface RunResult {
  /** Steps done (all of them unless one threw). */
  done: number;
  /** A step that threw, with its error. */
  failed: { step: Step; error: string } | null;
}

/** Run the plan on `w`, each step at its offset (or at once when the previous one ran late). */
export async function runPlan(w: World, steps: Step[]): Promise<RunResult> {
  const start = Date.now();
  let done = 0;
  for (const step of steps) {
    const wait = start + step.at - Date.now();
    if (wait > 0) await sleep(wait);
    try {
      await (STEP_KINDS[step.kind] as (typeof STEP_KINDS)[string]).run(w, step.args);
    } catch (err) {
      return { done, failed: { step, error: String(err) } };
    }
    done++;
  }
  return { done, failed: null };
}

/** Bring back whatever the plan left down (link, collector, sidecar), in that order. */
export async function heal(w: World, m: Model): Promise<void> {
  let state = m;
  for (const kind of HEAL) {
    const k = STEP_KINDS[kind] as (typeof STEP_KINDS)[string];
    if (k.weight(state) > 0) {
      await k.run(w, {});
      state = k.next(state, {});
    }
  }
}

export type { World };
export type { CrashRig };
