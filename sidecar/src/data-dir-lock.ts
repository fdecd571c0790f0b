import { mkdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ApmError } from '@apm-sidecar/proto';
import Database from 'better-sqlite3';

/**
 * `data_dir` belongs to one sidecar at a time (DESIGN §8).
 *
 * Node has no flock(2), but SQLite takes POSIX fcntl locks, and those are held
 * by the kernel for the process: they go away when it exits, however it exits
 * (kill -9 included), so a lock can never be stale and no pid has to be trusted
 * to decide that. `sidecar.lock` is a tiny SQLite file opened with
 * `locking_mode = EXCLUSIVE`; one write takes the exclusive lock, and that mode
 * keeps it until the connection closes. A second process gets SQLITE_BUSY at
 * once (no busy timeout) without writing anything.
 *
 * `sidecar.pid` only says who holds the lock, for the message a second sidecar
 * prints; it is written after the lock is taken and never decides anything.
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
      db.pragma('locking_mode = EXCLUSIVE');
      // No journal file next to it: the content of the lock file does not matter.
      db.pragma('journal_mode = OFF');
      db.exec(`BEGIN EXCLUSIVE; CREATE TABLE IF NOT EXISTS holder (pid INTEGER); DELETE FROM holder; INSERT INTO holder (pid) VALUES (${process.pid}); COMMIT`);
    } catch (err) {
      db?.close();
      const code = (err as { code?: string }).code ?? '';
      if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')) throw new DataDirLockedError(dir, readPid(dir));
      throw new ApmError('ERR_DATA_DIR_LOCK', `cannot lock data_dir ${dir}: ${(err as Error).message}`);
    }
    try {
      writeFileSync(join(dir, PID_FILE), `${process.pid}\n`, { mode: 0o600 });
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
