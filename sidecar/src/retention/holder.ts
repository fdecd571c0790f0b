import type { Counters } from '../counters';
import { DataDirLock, DataDirLockError } from '../data-dir-lock';
import type { Logger } from '../logger';
import { RetentionStore, type StorageCondition, type Synchronous, isPassingStorageError } from './store';

export interface RetentionHolderOptions {
  dataDir: string;
  synchronous: Synchronous;
  log: Logger;
  counters: Counters;
  /** Called once the store is open, to load what a previous run left (recovery.ts). */
  opened: (store: RetentionStore) => void;
}

/** How the retention is doing, for status and /metrics. */
export interface RetentionCondition {
  condition: 'ok' | 'failing' | 'unavailable' | 'full';
  conditionSince: string | null;
  lastError: string | null;
}

/**
 * The retention's life: the data_dir lock, opening the store (and retrying every second when it
 * cannot be opened now), probing it while its commits fail, and closing it. `store` is null while
 * it is not open: durable frames are then refused (not acked).
 */
export class RetentionHolder {
  store: RetentionStore | null = null;
  /** Why the retention is not open (null when it is). */
  closedWhy: string | null = null;
  private lock: DataDirLock | null = null;

  constructor(private readonly opts: RetentionHolderOptions) {}

  /**
   * Open the retention and load what a previous run left. When it cannot be opened now (disk
   * full, I/O error) the sidecar runs on and refuses durable frames until a later try succeeds.
   */
  open(starting = false): void {
    const { log } = this.opts;
    let store: RetentionStore;
    try {
      // The data_dir lock comes first: a retention is opened only by its one owner.
      this.lock ??= DataDirLock.acquire(this.opts.dataDir);
      store = RetentionStore.open(this.opts.dataDir, this.opts.synchronous, log);
    } catch (err) {
      // Another sidecar owns the data_dir, or the durability asked for cannot be had: refuse to start.
      // Anything else that is not passing (e.g. data_dir is not a directory) is a start-up error too;
      // a passing one (disk full, I/O error) is retried every second while the sidecar runs on.
      const passing = isPassingStorageError(err) || (err instanceof DataDirLockError && isPassingStorageError(err.reason));
      if (starting && !passing) throw err;
      const why = (err as Error).message;
      if (this.closedWhy === null) log.error({ err: why }, `retention cannot be opened (${why}): durable frames are not acked until it can`);
      this.closedWhy = why;
      return;
    }
    if (this.closedWhy !== null) log.warn({ path: store.path }, 'retention opened: durable frames are acked again');
    this.closedWhy = null;
    store.onError = () => {
      this.opts.counters.retentionErrors++;
    };
    store.onCondition = (c) => this.conditionChanged(c);
    this.store = store;
    try {
      this.opts.opened(store);
    } catch (err) {
      // What could be read is in memory; the rest stays in the file for the next start.
      log.error({ err: (err as Error).message, path: store.path }, 'reading the retention failed part way: continuing with what was read');
    }
  }

  /** Every second: open the retention if it is not, check it still writes when it failed. The open store, or null. */
  upkeep(): RetentionStore | null {
    if (this.store === null) this.open();
    const store = this.store;
    if (store?.condition.failing) store.probe();
    return store;
  }

  /** `full` is the space policy's verdict (beyond its bounds), given by the caller. */
  condition(full: boolean): RetentionCondition {
    const store = this.store;
    if (store === null) return { condition: 'unavailable', conditionSince: null, lastError: this.closedWhy };
    const c = store.condition;
    if (c.failing) return { condition: 'failing', conditionSince: new Date(c.since).toISOString(), lastError: c.lastError };
    return { condition: full ? 'full' : 'ok', conditionSince: null, lastError: c.lastError };
  }

  close(): void {
    this.store?.close();
    this.lock?.release();
  }

  private conditionChanged(c: StorageCondition): void {
    if (c.failing) {
      this.opts.log.error(
        { err: c.lastError, path: this.store?.path },
        `retention writes are failing (${c.lastError}): durable frames are not acked, shims keep and resend them`,
      );
    } else {
      this.opts.log.warn({ failedCommits: this.opts.counters.retentionErrors }, 'retention writes succeed again: durable frames are acked again');
    }
  }
}
