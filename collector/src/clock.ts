/**
 * Time as the collector's agent side sees it: liveness (idle ping, stall), handshake deadlines,
 * license release and the API's retention of disconnected agents. Injected so the real default
 * durations (minutes) are tested with a fake clock in milliseconds, and run with the process's
 * timers otherwise. The same shape as the sidecar's Link clock, so one fake serves both.
 */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/**
 * The process's clock. Its timers never hold the process open by themselves: the listening
 * sockets and connections do, and a timer left after they close must not delay the exit.
 */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms).unref(),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};
