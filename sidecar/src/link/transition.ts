import type { SidecarState } from '@apm-sidecar/proto';

/**
 * What can happen to the link to the collector. The Link (link.ts) does the counting and the
 * timing; this file alone decides which state follows which (DESIGN §6):
 *
 *   connecting ──session-active──▶ active ──session-lost──▶ reconnecting
 *   connecting | reconnecting ──standby-timer──▶ standby
 *   not yet muted ──attempt-failed (count ≥ mute_after_attempts)──▶ muted
 *   not active ──schedule-exhausted──▶ stopped ──operator-reconnect──▶ connecting | reconnecting
 *   any ──session-active──▶ active
 */
export type LinkEvent =
  /** Handshake done, configuration and license received. */
  | { readonly type: 'session-active'; readonly cause: string }
  /** An active session ended. */
  | { readonly type: 'session-lost'; readonly cause: string }
  /** A whole round (every host once) failed; `failed` rounds since the last active session. */
  | { readonly type: 'attempt-failed'; readonly failed: number; readonly muteAfterAttempts: number; readonly cause: string }
  /** `standby_after_ms` passed since the collector became unreachable. */
  | { readonly type: 'standby-timer'; readonly standbyAfterMs: number }
  /** A schedule ending in `stop` has no attempt left. */
  | { readonly type: 'schedule-exhausted'; readonly attempts: number; readonly cause: string }
  /** `apm-sidecar reconnect` or SIGHUP. */
  | { readonly type: 'operator-reconnect'; readonly everActive: boolean };

export interface Transition {
  readonly state: SidecarState;
  /** Why; null when the event leaves the state as it is. */
  readonly cause: string | null;
}

const stay = (state: SidecarState): Transition => ({ state, cause: null });

/** The state machine of DESIGN §6 as a pure function: no clock, no timers, no I/O. */
export function transition(state: SidecarState, event: LinkEvent): Transition {
  switch (event.type) {
    case 'session-active':
      return { state: 'active', cause: event.cause };
    case 'session-lost':
      return state === 'active' ? { state: 'reconnecting', cause: event.cause } : stay(state);
    case 'attempt-failed': {
      const mute = event.muteAfterAttempts;
      // Muting is a step down from connecting, reconnecting or standby; 0 turns it off.
      if (mute <= 0 || event.failed < mute || state === 'muted' || state === 'stopped' || state === 'active') return stay(state);
      return { state: 'muted', cause: `${event.failed} failed attempts to reach the collector (mute_after_attempts=${mute}): ${event.cause}` };
    }
    case 'standby-timer':
      if (state !== 'connecting' && state !== 'reconnecting') return stay(state);
      return { state: 'standby', cause: `collector unreachable for ${event.standbyAfterMs} ms (standby_after_ms)` };
    case 'schedule-exhausted':
      if (state === 'active' || state === 'stopped') return stay(state);
      return { state: 'stopped', cause: `gave up after ${event.attempts} reconnect attempts (${event.cause}); apm-sidecar reconnect or SIGHUP tries again` };
    case 'operator-reconnect':
      if (state !== 'stopped') return stay(state);
      return { state: event.everActive ? 'reconnecting' : 'connecting', cause: 'reconnect requested' };
  }
}
