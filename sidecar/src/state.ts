import type { SidecarState } from '@apm-sidecar/proto';
import type { Logger } from './logger';

/**
 * The sidecar's state, changed only through set(): one log line `from → to`
 * with the cause, then every listener (the IPC server pushes it to shims).
 * Its one writer is the Link (link/link.ts), which passes the time from its clock.
 */
export class StateHolder {
  private current: SidecarState = 'connecting';
  since = Date.now();
  cause = 'start';
  private readonly listeners: ((to: SidecarState, cause: string, from: SidecarState) => void)[] = [];

  constructor(private readonly log: Logger) {}

  get state(): SidecarState {
    return this.current;
  }

  onChange(fn: (to: SidecarState, cause: string, from: SidecarState) => void): void {
    this.listeners.push(fn);
  }

  set(next: SidecarState, cause: string, at: number = Date.now()): void {
    if (next === this.current) return;
    const from = this.current;
    this.current = next;
    this.since = at;
    this.cause = cause;
    this.log.info({ event: 'state', from, to: next, cause }, `${from} → ${next}`);
    for (const fn of this.listeners) fn(next, cause, from);
  }
}
