import { mkdirSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ApmError } from '@apm-sidecar/proto';
import Database from 'better-sqlite3';

/**
 * `data_dir` belongs to one sidecar at a time (DESIGN §8).
 *
 * Node has no flock(2), but SQLite takes POSIX fcntl locks, and those are held
 * by the kernel for the process: they go away when it exits, however it exits
 * (kill -9 included), so a lock can never be stale and no pid has to be trusted
 * to decide that. `sidecar.lock` is a tiny SQLite file; `BEGIN EXCLUSIVE` takes
 * its exclusive lock and the transaction stays open, writing nothing, for the
 * life of the process. A second process gets SQLITE_BUSY at once (no busy
 * timeout) without writing anything. Only the very first start writes the file
 * (one empty table, so it is a database); later ones take the lock even on a
 * full disk.
 *
 * `sidecar.pid` only says who holds the lock, for the message a second sidecar
 * prints; the holder replaces it after taking the lock, and it decides nothing.
 */
export class DataDirLockedError extends ApmError {
  constructor(
    readonly dir: string,
    readonly holderPid: number | null,
  ) {
    super(
      'ERR_DATA_DIR_LOCKED',
      `data_dir ${dir} is in use by another sidecar (pid ${holderPid ?? 'unknown'}); refusing to start (use another data_dir, or stop that sidecar)`,
    );
  }
}

/** The lock could not be taken for another reason than another holder (e.g. the disk is full on the first start). */
export class DataDirLockError extends ApmError {
  constructor(
    readonly dir: string,
    readonly reason: Error,
  ) {
    super('ERR_DATA_DIR_LOCK', `cannot lock data_dir ${dir}: ${reason.message}`);
  }
}

export const LOCK_FILE = 'sidecar.lock';
export const PID_FILE = 'sidecar.pid';

export class DataDirLock {
  private constructor(
    readonly dir: string,
    private db: Database.Database | null,
  ) {}

  /** Take the lock or throw DataDirLockedError naming the holder's pid; touches no other file of the directory. */
  static acquire(dir: string): DataDirLock {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const path = join(dir, LOCK_FILE);
    let db: Database.Database | null = null;
    try {
      db = new Database(path, { timeout: 0 });
      db.exec('CREATE TABLE IF NOT EXISTS holder (pid INTEGER)');
      db.exec('BEGIN EXCLUSIVE');
    } catch (err) {
      db?.close();
      const code = (err as { code?: string }).code ?? '';
      if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')) throw new DataDirLockedError(dir, readPid(dir));
      throw new DataDirLockError(dir, err as Error);
    }
    const pidFile = join(dir, PID_FILE);
    try {
      // A dead holder's pid must not be named: remove it even when the new one cannot be written (disk full).
      rmSync(pidFile, { force: true });
      writeFileSync(pidFile, `${process.pid}\n`, { mode: 0o600 });
    } catch {
      // informational only: the lock holds without it
    }
    return new DataDirLock(dir, db);
  }

  /** Release the lock (the kernel also does it when the process dies). Safe to call twice. */
  release(): void {
    const db = this.db;
    if (db === null) return;
    this.db = null;
    try {
      if (readPid(this.dir) === process.pid) unlinkSync(join(this.dir, PID_FILE));
    } catch {
      // already gone
    }
    try {
      db.close();
    } catch {
      // the lock goes with the process anyway
    }
  }
}

function readPid(dir: string): number | null {
  try {
    const n = Number.parseInt(readFileSync(join(dir, PID_FILE), 'utf8').trim(), 10);
    return Number.isSafeInteger(n) && n > 0 ? n : null;
  } catch {
    return null;
  }
}
