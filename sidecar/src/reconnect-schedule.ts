/**
 * The reconnect policy: a pure function of (schedule, attempt) — no timers, no clock — so a
 * five-minute schedule is tested in microseconds and the session only asks "how long until
 * the next attempt, or stop?".
 *
 * Text form (`reconnect_schedule`), a comma list of items:
 *
 *   COUNTxMS        COUNT attempts, MS milliseconds apart
 *   COUNTxMIN-MAX   COUNT attempts, each delay drawn uniformly from [MIN, MAX] (inclusive) — jitter
 *   MS | MIN-MAX    repeat forever (only as the last item)
 *   stop            give up after the items before it (only as the last item, never alone)
 *
 * After the last counted item the schedule either repeats that item's delay forever, or, when
 * the list ends in `stop`, gives up:
 *
 *   7x60000,300000       60 s ×7, then 300 s forever                      (profile appdynamics)
 *   3x5000-10000,stop    5–10 s ×3, then stop                              (profile whatap)
 *   3x1000               1 s ×3, then 1 s forever (the last item repeats)
 */
import { ApmError } from '@apm-sidecar/proto';

/** Delays longer than this fire immediately in Node's timers (with a warning): never allow them. */
export const MAX_RECONNECT_DELAY_MS = 2_147_483_647;
const MAX_COUNT = 1_000_000_000;

export interface ReconnectStep {
  /** How many attempts use this delay (≥ 1). */
  readonly count: number;
  /** Inclusive bounds of the delay in milliseconds; equal for a fixed delay. */
  readonly minMs: number;
  readonly maxMs: number;
}

export interface ReconnectSchedule {
  /** At least one step. */
  readonly steps: readonly ReconnectStep[];
  /** What follows the steps: the last step's delay forever, or no more attempts. */
  readonly then: 'repeat' | 'stop';
}

/** nextDelay was asked for an attempt number that is not a non-negative integer (a bug in the caller). */
export class ReconnectAttemptError extends ApmError {
  constructor(attempt: number) {
    super('ERR_RECONNECT_ATTEMPT', `attempt must be a non-negative integer, got ${attempt}`);
  }
}

/** A `reconnect_schedule` text that does not parse. `detail` is the reason without the text. */
export class ReconnectScheduleError extends ApmError {
  readonly text: string;
  readonly detail: string;
  constructor(text: string, detail: string) {
    super('ERR_RECONNECT_SCHEDULE', `invalid reconnect schedule ${JSON.stringify(text)}: ${detail}`);
    this.text = text;
    this.detail = detail;
  }
}

/** Reconnect behaviour of the commercial agents this product imitates (see DESIGN §6). */
export const PROFILES = {
  appdynamics: { reconnect_schedule: '7x60000,300000' },
  whatap: { reconnect_schedule: '3x5000-10000,stop' },
} as const;

export type ProfileName = keyof typeof PROFILES;

const DIGITS = /^[0-9]+$/;

function parseMs(text: string, word: string, fail: (detail: string) => never): number {
  if (!DIGITS.test(text)) fail(`${word} ${JSON.stringify(text)} is not a non-negative integer number of milliseconds`);
  const n = Number(text);
  if (n > MAX_RECONNECT_DELAY_MS) fail(`${word} ${text} is greater than the maximum ${MAX_RECONNECT_DELAY_MS} ms`);
  return n;
}

/** Parses `MS` or `MIN-MAX` into inclusive bounds. */
function parseRange(text: string, where: string, fail: (detail: string) => never): { minMs: number; maxMs: number } {
  const dash = text.indexOf('-');
  if (dash < 0) {
    const ms = parseMs(text.trim(), `${where}: delay`, fail);
    return { minMs: ms, maxMs: ms };
  }
  const minMs = parseMs(text.slice(0, dash).trim(), `${where}: MIN`, fail);
  const maxMs = parseMs(text.slice(dash + 1).trim(), `${where}: MAX`, fail);
  if (minMs > maxMs) fail(`${where}: MIN ${minMs} is greater than MAX ${maxMs}`);
  return { minMs, maxMs };
}

/**
 * Parses the text form described at the top of this file. Throws `ReconnectScheduleError`
 * (code `ERR_RECONNECT_SCHEDULE`) naming the offending item.
 */
export function parseReconnectSchedule(text: string): ReconnectSchedule {
  const fail = (detail: string): never => {
    throw new ReconnectScheduleError(text, detail);
  };
  if (text.trim() === '') fail('the schedule is empty; expected e.g. "7x60000,300000" or "3x5000-10000,stop"');
  const items = text.split(',').map((s) => s.trim());
  const steps: ReconnectStep[] = [];
  let then: 'repeat' | 'stop' = 'repeat';
  for (let i = 0; i < items.length; i++) {
    const item = items[i] as string;
    const where = `item ${i + 1} ${JSON.stringify(item)}`;
    const last = i === items.length - 1;
    if (item === '') fail(`item ${i + 1} is empty`);
    if (item.toLowerCase() === 'stop') {
      if (i === 0) fail('"stop" cannot be the first item: there would be no attempts at all');
      if (!last) fail(`${where}: "stop" must be the last item`);
      then = 'stop';
      continue;
    }
    const x = item.search(/[xX]/);
    if (x < 0) {
      // Bare MS / MIN-MAX: repeat forever. Anything after it could never be reached.
      const range = parseRange(item, where, fail);
      if (!last) {
        const next = items[i + 1] ?? '';
        if (next.toLowerCase() === 'stop' && i + 1 === items.length - 1) {
          fail(`${where} repeats forever, so the "stop" after it is never reached; write "1x${item},stop" for one attempt then stop`);
        }
        fail(`${where} has no COUNTx and so repeats forever; only the last item may, write e.g. "1x${item}"`);
      }
      steps.push({ count: 1, ...range });
      continue;
    }
    const countText = item.slice(0, x).trim();
    if (!DIGITS.test(countText)) fail(`${where}: count ${JSON.stringify(countText)} is not a positive integer`);
    const count = Number(countText);
    if (count === 0) fail(`${where}: count is 0; a count must be at least 1`);
    if (count > MAX_COUNT) fail(`${where}: count ${countText} is greater than the maximum ${MAX_COUNT}`);
    const range = parseRange(item.slice(x + 1).trim(), where, fail);
    steps.push({ count, ...range });
  }
  return { steps, then };
}

/** The canonical text of a schedule; `parseReconnectSchedule(formatReconnectSchedule(s))` equals `s` in effect. */
export function formatReconnectSchedule(schedule: ReconnectSchedule): string {
  const parts = schedule.steps.map((step, i) => {
    const range = step.minMs === step.maxMs ? `${step.minMs}` : `${step.minMs}-${step.maxMs}`;
    const lastRepeating = i === schedule.steps.length - 1 && schedule.then === 'repeat';
    return lastRepeating && step.count === 1 ? range : `${step.count}x${range}`;
  });
  if (schedule.then === 'stop') parts.push('stop');
  return parts.join(',');
}

/** How many attempts the schedule allows in total: `Infinity` unless it ends in `stop`. */
export function attemptLimit(schedule: ReconnectSchedule): number {
  if (schedule.then === 'repeat') return Infinity;
  return schedule.steps.reduce((sum, step) => sum + step.count, 0);
}

function draw(step: ReconnectStep, random: () => number): number {
  if (step.minMs === step.maxMs) return step.minMs;
  const span = step.maxMs - step.minMs + 1;
  // Clamp: an injected random() may return exactly 1 (Math.random never does).
  const offset = Math.min(span - 1, Math.max(0, Math.floor(random() * span)));
  return step.minMs + offset;
}

/**
 * The delay before the next attempt, or `'stop'`. `attempt` is the 0-based count of attempts
 * already scheduled (0 for the first attempt after a loss). `random` returns [0, 1) and is
 * injectable so tests are deterministic.
 */
export function nextDelay(schedule: ReconnectSchedule, attempt: number, random: () => number = Math.random): number | 'stop' {
  if (!Number.isInteger(attempt) || attempt < 0) {
    throw new ReconnectAttemptError(attempt);
  }
  let remaining = attempt;
  for (const step of schedule.steps) {
    if (remaining < step.count) return draw(step, random);
    remaining -= step.count;
  }
  if (schedule.then === 'stop') return 'stop';
  const lastStep = schedule.steps[schedule.steps.length - 1];
  if (lastStep === undefined) return 'stop'; // not produced by the parser; be total anyway
  return draw(lastStep, random);
}

/** The schedule as a policy function `(attempt) => delayMs | 'stop'` (ioredis `retryStrategy` style). */
export function reconnectPolicy(schedule: ReconnectSchedule, random: () => number = Math.random): (attempt: number) => number | 'stop' {
  return (attempt) => nextDelay(schedule, attempt, random);
}
