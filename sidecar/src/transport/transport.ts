import type { Pack } from '../pack';

/**
 * An upstream. The sender hands it one pack at a time (up to `window` in
 * flight) and forgets a pack only when `done` is called without an error.
 */
export interface Transport {
  readonly name: string;
  /** True when send() may be called. */
  readonly ready: boolean;
  /** Packs the transport accepts before acknowledging earlier ones. */
  readonly window: number;
  start(wake: () => void): void;
  send(pack: Pack, done: (err?: Error) => void): void;
  close(): Promise<void>;
}
