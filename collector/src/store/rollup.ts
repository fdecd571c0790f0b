/**
 * The rollup finality rule (DESIGN §7): points are rolled up per minute, and a minute is
 * final `rollup_grace_ms` after it ends. Points that arrive for a final minute are dropped,
 * counted and acked (the sidecar must not retry them): a final minute's rollup never changes.
 *
 *   minute m          ends               final
 *   |-----------------|------------------|------------------>
 *   m                 m + ROLLUP_MS      m + ROLLUP_MS + rollup_grace_ms
 */

export const ROLLUP_MS = 60_000;

/** The start of the minute holding `ts` (epoch ms). */
export function minuteOf(ts: number): number {
  return Math.floor(ts / ROLLUP_MS) * ROLLUP_MS;
}

/** True when the minute holding `intervalStart` is final at `now`: its points are dropped as late. */
export function isMinuteFinal(intervalStart: number, now: number, rollupGraceMs: number): boolean {
  return minuteOf(intervalStart) + ROLLUP_MS + rollupGraceMs <= now;
}
