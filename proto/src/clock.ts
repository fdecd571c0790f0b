/**
 * Time as the sidecar's link and the collector's agent side see it: reconnect schedules,
 * liveness, deadlines, license release. Injected so the real default durations (minutes) are
 * tested with a fake clock in milliseconds. A type and the process's clock only: no I/O.
 */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/**
 * The process's clock. Its timers never hold the process open by themselves: listening
 * sockets and connections do, and a timer left after they close must not delay the exit.
 */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms).unref(),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};
