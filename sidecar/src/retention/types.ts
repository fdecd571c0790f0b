import { ApmError } from '@apm-sidecar/proto';

export type Synchronous = 'NORMAL' | 'FULL';

export class RetentionError extends ApmError {}

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
