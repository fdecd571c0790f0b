import { performance } from 'node:perf_hooks';
import type { Clock } from './clock';
import type { Logger } from './logger';

/**
 * Deleting stored data older than `store_retention_days` (DESIGN §7), on both stores, without
 * stalling ingest. Every `intervalMs` one run deletes in batches of `batchRows` (each batch one
 * short transaction of the store) until a batch deletes fewer. Between batches it gives the
 * store back to the agents' writes, so that they wait for one batch at most: it rests as long as
 * the batch took (a turn of the event loop, setImmediate, when that rounds to 0 ms), so a long
 * backlog takes at most half of the time; and while the event loop was busy with other work for
 * more than half of that rest (the agents' writes), it rests again, up to MAX_REST_FACTOR times
 * the batch: pruning is background work, ingest comes first. With SQLite a batch holds the
 * event loop (better-sqlite3 is synchronous); back-to-back batches left ingest queueing behind
 * the pruner, and so did a fixed half of the time when ingest needed more (bench/prune.js).
 *
 *   timer ─▶ run: prune(before, batchRows) ─▶ rest (longer while busy) ─▶ prune … ─▶ (a short batch) ─▶ timer
 *
 * The next run is set when a run ends, so two runs never overlap, however slow a batch is.
 * A failed batch ends its run; the error is counted and logged (once until a run succeeds
 * again) and the next run tries again. Nothing is thrown.
 */

const DAY_MS = 86_400_000;
/** Rest again while the event loop was busier than this over the last rest. */
const BUSY = 0.5;
/** At most this many times the batch's duration of rest: pruning still gets about a tenth of a busy store. */
const MAX_REST_FACTOR = 10;

/** How busy the event loop was since the last call (0..1), from node's event-loop utilization. */
export function eventLoopBusy(): () => number {
  let last = performance.eventLoopUtilization();
  return () => {
    const now = performance.eventLoopUtilization();
    const u = performance.eventLoopUtilization(now, last).utilization;
    last = now;
    return u;
  };
}

export interface PrunableStore {
  prune(before: number, maxRows: number): Promise<number>;
}

/** One run of the pruner, as `onPruned` and the log see it. */
export interface PruneRun {
  /** Rows older than this (epoch ms) were deleted. */
  before: number;
  rows: number;
  batches: number;
  ms: number;
  /** Set when a batch failed (the run ended there). */
  error?: string;
}

export interface PrunerCounts {
  runs: number;
  rows: number;
  errors: number;
}

export interface PrunerOptions {
  store: PrunableStore;
  retentionDays: number;
  intervalMs: number;
  batchRows: number;
  clock: Clock;
  log: Pick<Logger, 'info' | 'warn'>;
  onPruned?: (run: PruneRun) => void;
  /** Where runs, rows and errors are counted (the collector's stats: /api/stats, /metrics); default a new object. */
  counts?: PrunerCounts;
  /** How busy the process was since the last call (0..1); default eventLoopBusy(). */
  busy?: () => number;
}

export interface Pruner {
  /** Ends the schedule; resolves once a batch under way has ended. Safe to call twice. */
  stop(): Promise<void>;
  readonly counts: Readonly<PrunerCounts>;
}

/** A store's error as it may be logged: a URL's password (a driver may echo the URL) never is. */
export function errorText(err: unknown): string {
  const text = err instanceof Error ? `${(err as Error & { code?: unknown }).code ?? err.name}: ${err.message}` : String(err);
  return text.replace(/(\/\/[^:/@\s]*):[^@\s]*@/g, '$1:[redacted]@');
}

export function startPruner(opts: PrunerOptions): Pruner {
  const { store, clock, log } = opts;
  const busy = opts.busy ?? eventLoopBusy();
  const batchRows = Math.max(1, Math.floor(opts.batchRows));
  const retentionMs = opts.retentionDays * DAY_MS;
  const counts: PrunerCounts = opts.counts ?? { runs: 0, rows: 0, errors: 0 };
  let timer: unknown = null;
  let running: Promise<void> | null = null;
  let stopped = false;
  /** The rest between two batches: its timer, and how stop() ends it early. */
  let restTimer: unknown = null;
  let wake: (() => void) | null = null;
  /** Failed runs since the last one that succeeded (the first is logged, then the recovery). */
  let failing = 0;

  /** Wait `ms` on the clock, or one turn of the event loop when it is 0. */
  function rest(ms: number): Promise<void> {
    return new Promise((resolve) => {
      wake = () => {
        wake = null;
        restTimer = null;
        resolve();
      };
      if (ms > 0) restTimer = clock.setTimeout(wake, ms);
      else setImmediate(wake);
    });
  }

  async function run(): Promise<void> {
    const started = clock.now();
    const r: PruneRun = { before: started - retentionMs, rows: 0, batches: 0, ms: 0 };
    try {
      for (;;) {
        const batchStart = clock.now();
        const n = await store.prune(r.before, batchRows);
        r.batches++;
        r.rows += n;
        if (n < batchRows || stopped) break;
        const took = clock.now() - batchStart;
        busy(); // from here on: the others' work, not this batch
        let rested = 0;
        do {
          await rest(took);
          rested += took;
        } while (!stopped && took > 0 && rested < MAX_REST_FACTOR * took && busy() > BUSY);
        if (stopped) break;
      }
    } catch (err) {
      r.error = errorText(err);
    }
    r.ms = clock.now() - started;
    counts.runs++;
    counts.rows += r.rows;
    if (r.error !== undefined) {
      counts.errors++;
      if (failing++ === 0) log.warn({ before: r.before, rows: r.rows, error: r.error }, 'pruning old data failed; retrying every interval');
    } else {
      if (failing > 0) log.info({ failedRuns: failing }, 'pruning old data works again');
      failing = 0;
      if (r.rows > 0) log.info({ before: r.before, rows: r.rows, batches: r.batches, ms: r.ms }, 'pruned old data');
    }
    try {
      opts.onPruned?.(r);
    } catch {
      // an observer's failure is not the pruner's
    }
  }

  function schedule(): void {
    if (stopped) return;
    timer = clock.setTimeout(() => {
      timer = null;
      running = run().finally(() => {
        running = null;
        schedule();
      });
    }, opts.intervalMs);
  }

  schedule();
  return {
    counts,
    async stop(): Promise<void> {
      stopped = true;
      if (timer !== null) clock.clearTimeout(timer);
      timer = null;
      if (restTimer !== null) clock.clearTimeout(restTimer);
      wake?.();
      await running;
    },
  };
}
