import { ApmError } from '@apm-sidecar/proto';

export type Synchronous = 'NORMAL' | 'FULL';

/** The family of the retention's errors (each subclass has its code). */
export class RetentionError extends ApmError {}

/** The retention database cannot be opened or written now (disk full, I/O error): durable frames are not acked. */
export class RetentionUnavailableError extends RetentionError {
  constructor(message: string) {
    super('ERR_RETENTION_UNAVAILABLE', message);
  }
}

/** An operation reached the retention store after it was closed. */
export class RetentionClosedError extends RetentionError {
  constructor() {
    super('ERR_RETENTION_CLOSED', 'retention store is closed');
  }
}

/** SQLite did not keep the `synchronous` setting asked for: acks could cover data a crash loses. */
export class RetentionDurabilityError extends RetentionError {
  constructor(message: string) {
    super('ERR_RETENTION_DURABILITY', message);
  }
}

/** The retention file fails SQLite's integrity check: it is quarantined and a fresh one made. */
export class RetentionCorruptError extends RetentionError {
  constructor(message: string) {
    super('ERR_RETENTION_CORRUPT', message);
  }
}

/** The retention file was written by a newer sidecar (a schema this one does not know). */
export class RetentionVersionError extends RetentionError {
  constructor(message: string) {
    super('ERR_RETENTION_VERSION', message);
  }
}

export interface StoredFrame {
  instanceId: string;
  seq: number;
  intervalStart: number;
  payload: Buffer;
}

export interface StoredPack {
  packId: string;
  intervalStart: number;
  intervalMs: number;
  body: Buffer;
  points: number;
}

export interface StoredBt {
  name: string;
  ts: number;
  app: string;
  instanceId: string;
  pid: number;
}

/** Failure codes that say nothing about the file's content: retry later, never quarantine. */
const PASSING =
  /^(ERR_RETENTION_UNAVAILABLE|SQLITE_FULL|SQLITE_IOERR|SQLITE_BUSY|SQLITE_LOCKED|SQLITE_READONLY|SQLITE_NOMEM|SQLITE_PROTOCOL|ENOSPC|EIO|EROFS|EDQUOT)/;

export function isPassingStorageError(err: unknown): boolean {
  return PASSING.test(String((err as { code?: unknown } | null)?.code ?? ''));
}

/** Whether commits are succeeding; flips on the first failure and back on the first success. */
export interface StorageCondition {
  failing: boolean;
  since: number;
  lastError: string | null;
  failedCommits: number;
}

export interface SpaceUsage {
  /** Bytes of the database in use by rows: (page_count - freelist_count) * page_size (the WAL is transient: not counted). */
  usedBytes: number;
  /** Size of the database and its WAL on disk. */
  fileBytes: number;
  /** Pages inside the file that SQLite will reuse before growing it. */
  freelistBytes: number;
}
