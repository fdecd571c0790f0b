import type { Logger } from '../logger';
import type { Pack } from '../pack';
import type { StateHolder } from '../state';

/** What a transport gets from the sidecar when it starts. */
export interface TransportContext {
  /** Call when send() may be called again (connected, drained). */
  wake(): void;
  /** The sidecar state; written only by the transport's Link (link/link.ts, DESIGN §6). */
  state: StateHolder;
  log: Logger;
}

/**
 * An upstream. The sender hands it one pack at a time (up to `window` in
 * flight) and forgets a pack only when `done` is called without an error.
 * On failure, `done(err)` is called for the packs in reverse send order, so the
 * sender putting each back at its queue's head restores the original order.
 */
export interface Transport {
  readonly name: string;
  /** True when send() may be called. */
  readonly ready: boolean;
  /** Packs the transport accepts before acknowledging earlier ones. */
  readonly window: number;
  start(ctx: TransportContext): void;
  send(pack: Pack, done: (err?: Error) => void): void;
  /** The set of apps behind the sidecar changed (optional). */
  appsChanged?(): void;
  /** `apm-sidecar reconnect` / SIGHUP. */
  reconnect(): { ok: boolean; message: string };
  /** Upstream details for `apm-sidecar status`. */
  status(): Record<string, unknown>;
  /** Ready for /readyz: e.g. an ack received recently. */
  readiness(maxAckAgeMs: number): { ready: boolean; reason: string };
  close(): Promise<void>;
}
