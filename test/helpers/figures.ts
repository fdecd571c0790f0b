/**
 * The fault suite's figures: every fault case reports what it measured in one
 * record, printed with the test and appended to the file `make test-faults`
 * turns into test/RELIABILITY.md (test/faults/report.js). The suite's scale is
 * one knob, APM_FAULT_LEVEL: `quick` inside `make test`, `full` for
 * `make test-faults`, `soak` for `make soak`.
 */
import { appendFileSync, readFileSync } from 'node:fs';

export type FaultLevel = 'quick' | 'full' | 'soak';

function readLevel(): FaultLevel {
  const v = process.env.APM_FAULT_LEVEL ?? 'quick';
  if (v !== 'quick' && v !== 'full' && v !== 'soak') throw new Error(`APM_FAULT_LEVEL must be quick, full or soak, not ${JSON.stringify(v)}`);
  return v;
}

export const LEVEL: FaultLevel = readLevel();

/** A count or duration by level: `quick` in `make test`, `full` in `make test-faults`, `soak` in `make soak`. */
export function byLevel<T>(quick: T, full: T, soak: T = full): T {
  return LEVEL === 'quick' ? quick : LEVEL === 'full' ? full : soak;
}

/** The seed of a randomised case: SEED from the environment (to replay), else a fresh one, always printed. */
export function seed(): number {
  const s = process.env.SEED;
  if (s !== undefined && s !== '') {
    const n = Number(s);
    if (!Number.isSafeInteger(n)) throw new Error(`SEED must be an integer, not ${JSON.stringify(s)}`);
    return n;
  }
  return Math.floor(Math.random() * 2 ** 31);
}

export type Section = 'proxy' | 'crash' | 'storage' | 'input' | 'scenario';

export interface Figures {
  /** A stable id, `section/name`, one per case; RELIABILITY.md has one row per id. */
  case: string;
  section: Section;
  /** The load while the fault ran, e.g. "4 shims × 200 counter adds/s". */
  load: string;
  /** The fault, e.g. "latency 80 ms ± 40 ms both ways". */
  fault: string;
  /** Acknowledged values missing at the collector (must be 0). */
  lost: number;
  /** Acknowledged values counted more than once (must be 0). */
  duplicated: number;
  /** The largest resident set seen, in MiB, per process role. */
  maxRssMb: Record<string, number>;
  /** Time from the end of the fault to normal service, in ms; null where that does not apply. */
  recoverMs: number | null;
  /** Anything else the case measured (iterations, drops by cause, cases run, seed). */
  extra?: Record<string, number | string | boolean>;
}

export interface FigureRecord extends Figures {
  level: FaultLevel;
  command: string;
  at: string;
}

/** The command that reproduces a case at the level it ran. */
export function commandFor(file: string, level: FaultLevel = LEVEL, seedValue?: number): string {
  const base = `APM_FAULT_LEVEL=${level} node test/run.js ${file}`;
  return seedValue === undefined ? base : `SEED=${seedValue} ${base}`;
}

/**
 * Print a case's figures (a `# figures` line in the test output) and append them to
 * APM_FIGURES_FILE when set. `file` is the test file's name under test/faults.
 */
export function recordFigures(file: string, f: Figures, seedValue?: number): FigureRecord {
  const rec: FigureRecord = { ...f, level: LEVEL, command: commandFor(file, LEVEL, seedValue), at: new Date().toISOString() };
  process.stdout.write(`# figures ${JSON.stringify(rec)}\n`);
  const out = process.env.APM_FIGURES_FILE;
  if (out) appendFileSync(out, `${JSON.stringify(rec)}\n`);
  return rec;
}

/** Resident set of a process in MiB from /proc (0 once it has exited). */
export function rssMb(pid: number): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = /VmRSS:\s+(\d+) kB/.exec(status);
    return m ? Math.round((Number(m[1]) / 1024) * 10) / 10 : 0;
  } catch {
    return 0;
  }
}

/** Samples the RSS of named processes every `everyMs` and keeps the maximum of each. */
export class RssWatch {
  readonly max: Record<string, number> = {};
  private readonly timer: NodeJS.Timeout;
  constructor(
    private readonly pids: () => Record<string, number | undefined>,
    everyMs = 100,
  ) {
    this.timer = setInterval(() => this.sample(), everyMs);
    this.timer.unref();
    this.sample();
  }
  sample(): void {
    for (const [role, pid] of Object.entries(this.pids())) {
      if (pid === undefined) continue;
      const v = rssMb(pid);
      if (v > (this.max[role] ?? 0)) this.max[role] = v;
    }
  }
  stop(): Record<string, number> {
    clearInterval(this.timer);
    this.sample();
    return this.max;
  }
}
