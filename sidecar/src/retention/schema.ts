import { chmodSync, existsSync } from 'node:fs';
import Database from 'better-sqlite3';
import { RetentionCorruptError, RetentionDurabilityError, RetentionVersionError, type Synchronous } from './types';

/**
 * The retention's SQLite file: its settings, checked after they are set (synchronous is read
 * back: a durability that cannot be had is an error, not a surprise), its integrity and
 * schema version, its tables, and the statements the store runs.
 */
export const SCHEMA_VERSION = 1;
const SYNC_CODES: Record<Synchronous, number> = { NORMAL: 1, FULL: 2 };

/** Open (or create) the database at `path`; throws, with the file closed, when it cannot be used. */
export function openDatabase(path: string, synchronous: Synchronous): Database.Database {
  const db = new Database(path);
  try {
    chmodSync(path, 0o600);
    db.pragma('journal_mode = WAL');
    db.pragma(`synchronous = ${synchronous}`);
    const got = db.pragma('synchronous', { simple: true });
    if (got !== SYNC_CODES[synchronous]) {
      throw new RetentionDurabilityError(`SQLite synchronous is ${String(got)} after setting ${synchronous}`);
    }
    db.pragma('busy_timeout = 2000');
    const check = db.pragma('quick_check', { simple: true });
    if (check !== 'ok') throw new RetentionCorruptError(`integrity check failed: ${String(check)}`);
    const version = db.pragma('user_version', { simple: true }) as number;
    if (version > SCHEMA_VERSION) throw new RetentionVersionError(`database schema ${version} is newer than this sidecar's ${SCHEMA_VERSION}`);
    db.exec(`
      CREATE TABLE IF NOT EXISTS frames (instance_id TEXT NOT NULL, seq INTEGER NOT NULL, interval_start INTEGER NOT NULL, payload BLOB NOT NULL, PRIMARY KEY (instance_id, seq));
      CREATE INDEX IF NOT EXISTS frames_interval ON frames (interval_start);
      CREATE TABLE IF NOT EXISTS packs (pack_id TEXT PRIMARY KEY, interval_start INTEGER NOT NULL, interval_ms INTEGER NOT NULL, points INTEGER NOT NULL, body BLOB NOT NULL);
      CREATE INDEX IF NOT EXISTS packs_interval ON packs (interval_start);
      CREATE TABLE IF NOT EXISTS seqs (instance_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, seen_at INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS instances (instance_id TEXT PRIMARY KEY, secret_hash BLOB NOT NULL, seen_at INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS bt (name TEXT PRIMARY KEY, ts INTEGER NOT NULL, app TEXT NOT NULL, instance_id TEXT NOT NULL, pid INTEGER NOT NULL, sent INTEGER NOT NULL DEFAULT 0);
      PRAGMA user_version = ${SCHEMA_VERSION};
    `);
    for (const suffix of ['-wal', '-shm']) if (existsSync(path + suffix)) chmodSync(path + suffix, 0o600);
  } catch (err) {
    db.close();
    throw err;
  }
  return db;
}

/** Every statement the store runs, prepared once when the file is opened. */
const SQL = {
  insertFrame: 'INSERT OR IGNORE INTO frames (instance_id, seq, interval_start, payload) VALUES (?, ?, ?, ?)',
  upsertSeq:
    'INSERT INTO seqs (instance_id, seq, seen_at) VALUES (?, ?, ?) ON CONFLICT (instance_id) DO UPDATE SET seq = max(seq, excluded.seq), seen_at = excluded.seen_at',
  insertPack: 'INSERT OR REPLACE INTO packs (pack_id, interval_start, interval_ms, points, body) VALUES (?, ?, ?, ?, ?)',
  deleteFrame: 'DELETE FROM frames WHERE instance_id = ? AND seq = ?',
  deletePack: 'DELETE FROM packs WHERE pack_id = ?',
  insertBt: 'INSERT OR IGNORE INTO bt (name, ts, app, instance_id, pid) VALUES (?, ?, ?, ?, ?)',
  btSent: 'UPDATE bt SET sent = 1 WHERE name = ?',
  purgePacks: 'DELETE FROM packs WHERE interval_start < ? RETURNING pack_id AS packId, points',
  packsInOrder: 'SELECT pack_id AS packId, interval_start AS intervalStart, interval_ms AS intervalMs, points, body FROM packs ORDER BY interval_start, rowid',
  oldestPacks: 'SELECT pack_id AS packId, points, length(body) AS bytes FROM packs ORDER BY interval_start, rowid',
  purgeFrames: 'DELETE FROM frames WHERE interval_start < ?',
  purgeSeqs: 'DELETE FROM seqs WHERE seen_at < ?',
  insertInstance: 'INSERT OR IGNORE INTO instances (instance_id, secret_hash, seen_at) VALUES (?, ?, ?)',
  purgeInstances: 'DELETE FROM instances WHERE seen_at < ? AND instance_id NOT IN (SELECT instance_id FROM seqs)',
  counts:
    'SELECT (SELECT count(*) FROM frames) AS frames, (SELECT count(*) FROM packs) AS packs, (SELECT count(*) FROM bt WHERE sent = 0) AS bt, (SELECT min(interval_start) FROM packs) AS oldestPack, (SELECT min(interval_start) FROM frames) AS oldestFrame',
} as const;

type StatementName = keyof typeof SQL;
export type Statements = { readonly [K in StatementName]: Database.Statement };

export function prepare(db: Database.Database): Statements {
  const out: Partial<Record<StatementName, Database.Statement>> = {};
  for (const k of Object.keys(SQL) as StatementName[]) out[k] = db.prepare(SQL[k]);
  return out as Statements;
}
