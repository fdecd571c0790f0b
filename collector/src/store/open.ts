import { accessSync, chmodSync, closeSync, constants, existsSync, mkdirSync, openSync, readSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import Database from 'better-sqlite3';
import { DataDirModeError, StoreCorruptError, StoreDurabilityError, StoreOpenError } from '../errors';

/**
 * Opening `<dataDir>/collector.db` safely and durably.
 *
 * Files: the data directory is 0700 and the database (with its -wal and -shm) 0600, as they
 * hold the access keys' secrets. A file that is not SQLite is refused, never overwritten.
 *
 * Durability: WAL with synchronous = FULL, set explicitly and read back (the bundled SQLite
 * may default WAL to NORMAL, which can lose the last commits on power loss — and the
 * collector acks what it has committed).
 */

export const DB_FILE = 'collector.db';

const SQLITE_HEADER = Buffer.from('SQLite format 3\0', 'latin1');
/** synchronous: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA. */
const SYNC_NAMES = ['OFF', 'NORMAL', 'FULL', 'EXTRA'];

export interface OpenOptions {
  busyTimeoutMs?: number;
  /** Told when an existing data directory's mode was wider than 0700 and was tightened (the old mode). */
  onDirTightened?: (dir: string, oldMode: number) => void;
  /** Told when the database (or its -wal, -shm) was ours but not readable and writable by us, and got 0600 back (the old mode). */
  onFileModeRestored?: (path: string, oldMode: number) => void;
}

/**
 * The database files are this user's and 0600 (secureFiles); one of ours that this user may not
 * read or write (its mode was changed, e.g. `chmod 000`) holds the keys and everything stored,
 * intact: its mode is set back to 0600 (and the caller told) rather than the collector refusing
 * to start. Another user's file is left as it is.
 */
function restoreOwnModes(path: string, told: ((path: string, oldMode: number) => void) | undefined): void {
  const uid = process.geteuid?.();
  for (const p of [path, `${path}-wal`, `${path}-shm`]) {
    let mode: number;
    try {
      const st = statSync(p);
      if (!st.isFile() || st.uid !== uid) continue;
      mode = st.mode & 0o7777;
    } catch {
      continue; // absent
    }
    try {
      accessSync(p, constants.R_OK | constants.W_OK);
      continue;
    } catch {
      // ours, and not readable or writable by us
    }
    try {
      chmodSync(p, 0o600);
    } catch (err) {
      throw new StoreOpenError(p, `it is not readable and its mode cannot be set back to 0600: ${errText(err)}`);
    }
    told?.(p, mode);
  }
}

/** Read `PRAGMA synchronous` back and throw unless it is `wanted` (2 = FULL). Exported for tests. */
export function assertSynchronous(db: Database.Database, wanted = 2): void {
  const got = db.pragma('synchronous', { simple: true }) as number;
  if (got !== wanted) throw new StoreDurabilityError('synchronous', SYNC_NAMES[wanted] ?? String(wanted), SYNC_NAMES[got] ?? String(got));
}

function isSqliteError(err: unknown): err is Error & { code: string } {
  const code: unknown = err instanceof Error ? (err as Error & { code?: unknown }).code : undefined;
  return typeof code === 'string' && code.startsWith('SQLITE_');
}

export function isCorruption(err: unknown): boolean {
  return isSqliteError(err) && (err.code === 'SQLITE_NOTADB' || err.code.startsWith('SQLITE_CORRUPT'));
}

export function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Only the first 16 bytes: a non-empty file that does not start with SQLite's magic is not ours to touch. */
function hasSqliteHeader(path: string): boolean {
  const fd = openSync(path, 'r');
  try {
    const b = Buffer.alloc(16);
    const n = readSync(fd, b, 0, 16, 0);
    return n === 16 && b.equals(SQLITE_HEADER);
  } finally {
    closeSync(fd);
  }
}

/**
 * The data directory holds the access keys' secrets: nobody but its owner may list or
 * enter it. An existing directory open to group or others is tightened to 0700 (and the
 * caller told, to log it) when it is ours; a shared directory (sticky bit, like /tmp) or
 * another user's is refused rather than changed under its owner.
 */
function secureDataDir(dir: string, onTightened: ((dir: string, oldMode: number) => void) | undefined): void {
  let st: ReturnType<typeof statSync>;
  try {
    st = statSync(dir);
  } catch (err) {
    throw err instanceof StoreOpenError ? err : new StoreOpenError(dir, errText(err));
  }
  const mode = st.mode & 0o7777;
  if ((mode & 0o077) === 0) return;
  if ((mode & 0o1000) !== 0) throw new DataDirModeError(dir, mode, 'it is a shared directory (sticky bit)');
  const uid = process.geteuid?.();
  if (uid !== undefined && st.uid !== uid) throw new DataDirModeError(dir, mode, `it belongs to uid ${st.uid}, not to this user (uid ${uid})`);
  try {
    chmodSync(dir, mode & 0o700);
  } catch (err) {
    throw new StoreOpenError(dir, `cannot tighten its mode to 0700: ${errText(err)}`);
  }
  onTightened?.(dir, mode);
}

/** Open (creating if needed) `<dataDir>/collector.db`. Throws StoreOpenError, StoreCorruptError. */
export function openDatabaseFile(dataDir: string, opts: OpenOptions): { db: Database.Database; path: string } {
  const dir = resolve(dataDir);
  const path = join(dir, DB_FILE);
  try {
    // recursive mkdir returns the first directory it created (undefined when it existed).
    const created = mkdirSync(dir, { recursive: true, mode: 0o700 });
    if (created !== undefined) chmodSync(dir, 0o700);
    if (!statSync(dir).isDirectory()) throw new StoreOpenError(dir, 'not a directory');
  } catch (err) {
    throw new StoreOpenError(dir, errText(err));
  }
  secureDataDir(dir, opts.onDirTightened);
  restoreOwnModes(path, opts.onFileModeRestored);
  try {
    // Create the file ourselves with 0600 so it is never readable by others, even briefly.
    if (!existsSync(path)) closeSync(openSync(path, 'wx', 0o600));
    else if (!statSync(path).isFile()) throw new StoreOpenError(path, 'not a regular file');
  } catch (err) {
    throw err instanceof StoreOpenError ? err : new StoreOpenError(path, errText(err));
  }
  if (statSync(path).size > 0 && !hasSqliteHeader(path)) throw new StoreCorruptError(path, 'file is not an SQLite database');
  try {
    return { db: new Database(path, { fileMustExist: true, timeout: opts.busyTimeoutMs ?? 5000 }), path };
  } catch (err) {
    if (isCorruption(err)) throw new StoreCorruptError(path, errText(err));
    throw new StoreOpenError(path, errText(err));
  }
}

/** WAL, synchronous = FULL (read back), the busy timeout. Throws StoreDurabilityError. */
export function setDurability(db: Database.Database, busyTimeoutMs: number | undefined): void {
  db.pragma(`busy_timeout = ${Math.max(0, Math.floor(busyTimeoutMs ?? 5000))}`);
  const mode = db.pragma('journal_mode = WAL', { simple: true }) as string;
  if (String(mode).toLowerCase() !== 'wal') throw new StoreDurabilityError('journal_mode', 'WAL', String(mode));
  db.pragma('synchronous = FULL');
  assertSynchronous(db, 2);
}

/**
 * Session writes: an agent's state and license, the collectors' reaping. They commit with
 * synchronous=NORMAL instead of FULL: in WAL mode that is as safe against a crash of the
 * collector (kill -9) and keeps the file consistent, but skips the fsync, so a power loss may
 * undo the last few of them. The next FULL commit (any data batch, a key, the collector's
 * heartbeat every collector_heartbeat_ms) makes them durable. What such a loss could undo is
 * rebuilt anyway: a restarted collector ends the sessions of dead collectors and agents connect
 * again, taking their licenses again. Data, keys and tokens keep FULL (ack after an fsync).
 */
export type SessionWrite = <T>(write: () => T) => T;

export function sessionWrites(db: Database.Database): SessionWrite {
  // SQLite applies a PRAGMA when it compiles the statement, so a prepared one would act only once.
  return <T>(write: () => T): T => {
    db.exec('PRAGMA synchronous = NORMAL');
    try {
      return write();
    } finally {
      db.exec('PRAGMA synchronous = FULL');
    }
  };
}

/** 0600 on the database and, when present, its -wal and -shm files (SQLite gives them the db's mode, but be sure). */
export function secureFiles(path: string): void {
  for (const p of [path, `${path}-wal`, `${path}-shm`]) {
    try {
      chmodSync(p, 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new StoreOpenError(p, `cannot chmod 0600: ${errText(err)}`);
    }
  }
}
