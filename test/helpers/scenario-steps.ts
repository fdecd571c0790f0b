/**
 * The step kinds of the randomised scenarios (scenario.ts), in one registry. A kind says when it
 * applies and how likely it is (`weight` of the modelled state), draws its arguments from the
 * PRNG (`args`: the plan is a pure function of the seed, so it replays), says what the state is
 * after it (`next`), and does it to the real processes (`run`).
 *
 * Network toxics plug in the same way: `registerStepKind('proxy-latency', {...})` with a `run`
 * that drives a proxy the rig's `via` put between sidecar and collector (World.upstream).
 */
import type { CrashRig } from './crash-rig';
import type { Prng } from './prng';
import { sleep } from './procs';

export type Up = 'up' | 'down';

/** What the plan believes about the processes at a point of the run. */
export interface Model {
  collector: Up;
  sidecar: Up;
  apps: Up[];
  /** The link between sidecar and collector (a Gate): open, or cut (unreachable). */
  link: 'open' | 'cut';
}

export type Args = Record<string, number>;

/** Something between the sidecar and the collector that a step can cut and restore. */
export interface Upstream {
  open(): Promise<unknown>;
  cut(): Promise<void>;
}

/** The real processes a step acts on. */
export interface World {
  rig: CrashRig;
  upstream: Upstream;
}

export interface StepKind {
  /** Relative weight in this state; 0 when the step does not apply. */
  weight(m: Model): number;
  /** The step's arguments, drawn from the PRNG. */
  args(rng: Prng, m: Model): Args;
  /** The state after the step (a new object). */
  next(m: Model, a: Args): Model;
  run(w: World, a: Args): Promise<void>;
}

const same = (m: Model): Model => ({ ...m, apps: [...m.apps] });
const upApps = (m: Model): number[] => m.apps.flatMap((s, i) => (s === 'up' ? [i] : []));
const downApps = (m: Model): number[] => m.apps.flatMap((s, i) => (s === 'down' ? [i] : []));
const withApp = (m: Model, i: number, s: Up): Model => {
  const n = same(m);
  n.apps[i] = s;
  return n;
};

/** Stop a process for `ms`, then let it go on. */
async function pause(p: { child: { kill(sig: NodeJS.Signals): boolean } }, ms: number): Promise<void> {
  p.child.kill('SIGSTOP');
  await sleep(ms);
  p.child.kill('SIGCONT');
}

export const STEP_KINDS: Record<string, StepKind> = {
  /** Load only: the processes run as they are. */
  wait: {
    weight: () => 2,
    args: (rng) => ({ ms: rng.int(100, 1000) }),
    next: same,
    run: (_w, a) => sleep(a.ms as number),
  },
  'app-start': {
    weight: (m) => (downApps(m).length > 0 ? 3 : 0),
    args: (rng, m) => ({ app: rng.pick(downApps(m)) }),
    next: (m, a) => withApp(m, a.app as number, 'up'),
    run: async (w, a) => {
      w.rig.startApp(a.app as number);
    },
  },
  /** SIGTERM: the app flushes what it can and exits. */
  'app-stop': {
    weight: (m) => (upApps(m).length > 1 ? 1 : 0),
    args: (rng, m) => ({ app: rng.pick(upApps(m)) }),
    next: (m, a) => withApp(m, a.app as number, 'down'),
    run: async (w, a) => {
      await w.rig.endApp(a.app as number, 'SIGTERM');
    },
  },
  'app-kill': {
    weight: (m) => (upApps(m).length > 0 ? 2 : 0),
    args: (rng, m) => ({ app: rng.pick(upApps(m)) }),
    next: (m, a) => withApp(m, a.app as number, 'down'),
    run: async (w, a) => {
      await w.rig.endApp(a.app as number, 'SIGKILL');
    },
  },
  'app-pause': {
    weight: (m) => (upApps(m).length > 0 ? 1 : 0),
    args: (rng, m) => ({ app: rng.pick(upApps(m)), ms: rng.int(50, 1500) }),
    next: same,
    run: async (w, a) => {
      const p = w.rig.apps[a.app as number];
      if (p) await pause(p, a.ms as number);
    },
  },
  'sidecar-kill': {
    weight: (m) => (m.sidecar === 'up' ? 1 : 0),
    args: () => ({}),
    next: (m) => ({ ...same(m), sidecar: 'down' }),
    run: async (w) => {
      await w.rig.sidecar.kill('SIGKILL');
    },
  },
  /** SIGTERM: the sidecar flushes within shutdown_timeout_ms, commits and exits 0. */
  'sidecar-term': {
    weight: (m) => (m.sidecar === 'up' ? 1 : 0),
    args: () => ({}),
    next: (m) => ({ ...same(m), sidecar: 'down' }),
    run: async (w) => {
      const code = await w.rig.sidecar.kill('SIGTERM');
      if (code !== 0) throw new Error(`the sidecar exited ${code} on SIGTERM: ${w.rig.sidecar.stderr.slice(-500)}`);
    },
  },
  'sidecar-start': {
    // Down is short: the shims' buffers are bounded.
    weight: (m) => (m.sidecar === 'down' ? 6 : 0),
    args: () => ({}),
    next: (m) => ({ ...same(m), sidecar: 'up' }),
    run: (w) => w.rig.startSidecar(),
  },
  'sidecar-pause': {
    weight: (m) => (m.sidecar === 'up' ? 1 : 0),
    args: (rng) => ({ ms: rng.int(50, 1500) }),
    next: same,
    run: (w, a) => pause(w.rig.sidecar, a.ms as number),
  },
  'collector-kill': {
    weight: (m) => (m.collector === 'up' ? 1 : 0),
    args: () => ({}),
    next: (m) => ({ ...same(m), collector: 'down' }),
    run: async (w) => {
      await w.rig.collector.kill('SIGKILL');
    },
  },
  'collector-start': {
    weight: (m) => (m.collector === 'down' ? 3 : 0),
    args: () => ({}),
    next: (m) => ({ ...same(m), collector: 'up' }),
    run: (w) => w.rig.startCollector(),
  },
  'collector-pause': {
    weight: (m) => (m.collector === 'up' ? 1 : 0),
    args: (rng) => ({ ms: rng.int(50, 2000) }),
    next: same,
    run: (w, a) => pause(w.rig.collector, a.ms as number),
  },
  /** The collector unreachable for the sidecar (the Gate closes its listening socket). */
  'link-cut': {
    weight: (m) => (m.link === 'open' ? 1 : 0),
    args: () => ({}),
    next: (m) => ({ ...same(m), link: 'cut' }),
    run: (w) => w.upstream.cut(),
  },
  'link-open': {
    weight: (m) => (m.link === 'cut' ? 3 : 0),
    args: () => ({}),
    next: (m) => ({ ...same(m), link: 'open' }),
    run: async (w) => {
      await w.upstream.open();
    },
  },
};

/** Add a kind (e.g. a network toxic) to the registry; the name must be new. */
export function registerStepKind(name: string, kind: StepKind): void {
  if (Object.hasOwn(STEP_KINDS, name)) throw new Error(`step kind ${name} exists`);
  STEP_KINDS[name] = kind;
}

/** The kinds that bring the link, the collector and the sidecar back, in order, for the final check. */
export const HEAL: readonly string[] = ['link-open', 'collector-start', 'sidecar-start'];
