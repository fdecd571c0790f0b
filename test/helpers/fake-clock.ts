import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Clock, type Logger, createLogger } from '@apm-sidecar/sidecar';

interface Timer {
  at: number;
  seq: number;
  fn: () => void;
}

/**
 * A clock that moves only when the test says so. Timers due at the same time fire in the order
 * they were set, as Node's do. `advance` runs every timer due up to the new time, including
 * timers set by timers.
 */
export class FakeClock implements Clock {
  private t: number;
  private seq = 0;
  private timers = new Set<Timer>();

  constructor(start = 1_700_000_000_000) {
    this.t = start;
  }

  now = (): number => this.t;

  setTimeout = (fn: () => void, ms: number): unknown => {
    const timer = { at: this.t + Math.max(0, ms), seq: this.seq++, fn };
    this.timers.add(timer);
    return timer;
  };

  clearTimeout = (handle: unknown): void => {
    this.timers.delete(handle as Timer);
  };

  /** Timers still set. */
  get pending(): number {
    return this.timers.size;
  }

  /** Time of the next timer, or null. */
  get nextAt(): number | null {
    return this.next()?.at ?? null;
  }

  advance(ms: number): void {
    this.advanceTo(this.t + ms);
  }

  advanceTo(end: number): void {
    for (let timer = this.next(); timer !== undefined && timer.at <= end; timer = this.next()) {
      this.timers.delete(timer);
      this.t = timer.at;
      timer.fn();
    }
    this.t = Math.max(this.t, end);
  }

  private next(): Timer | undefined {
    let best: Timer | undefined;
    for (const timer of this.timers) if (best === undefined || timer.at < best.at || (timer.at === best.at && timer.seq < best.seq)) best = timer;
    return best;
  }
}

/** A real sidecar logger writing to a file in a temporary directory, and its lines read back. */
export function fileLogger(): { log: Logger; lines: () => Record<string, unknown>[]; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'apm-link-log-'));
  const file = join(dir, 'log.jsonl');
  const log = createLogger('info', file);
  const lines = (): Record<string, unknown>[] =>
    readFileSync(file, 'utf8')
      .split('\n')
      .filter((l) => l.length > 0)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  return { log, lines, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}
