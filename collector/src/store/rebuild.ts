import { existsSync, renameSync, rmSync } from 'node:fs';
import Database from 'better-sqlite3';

/**
 * Rebuilding a damaged collector.db from its tables' rows, as the file's owner would by hand
 * (`.dump` and restore). A page of an index going bad makes every write to that table fail
 * with SQLITE_CORRUPT, and REINDEX cannot clear it (it walks the damaged tree); but the rows
 * are intact in the table itself. So a new file gets the same schema and user_version, every
 * row each table yields to a scan of the table's own tree (never through an index), the
 * sqlite_sequence counters, and then its indexes, built afresh from those rows. The damaged
 * file is kept beside it as `<file>.corrupt-<time>`. The caller has closed the database.
 */

export interface RebuildResult {
  /** Where the damaged file was moved. */
  quarantined: string;
  rows: Record<string, number>;
  /** The first table that could not be read to its end, and why (its readable rows were kept). */
  error: string | null;
}

interface SchemaRow {
  type: string;
  name: string;
  sql: string;
}

const quote = (name: string): string => `"${name.replace(/"/g, '""')}"`;

export function rebuildFromTables(path: string): RebuildResult {
  const next = `${path}.rebuild`;
  for (const s of ['', '-wal', '-shm', '-journal']) rmSync(next + s, { force: true });
  const out: RebuildResult = { quarantined: '', rows: {}, error: null };
  const old = new Database(path, { fileMustExist: true });
  try {
    const fresh = new Database(next);
    try {
      const schema = old.prepare('SELECT type, name, sql FROM sqlite_schema WHERE sql IS NOT NULL ORDER BY rowid').all() as SchemaRow[];
      const tables = schema.filter((s) => s.type === 'table' && !s.name.startsWith('sqlite_'));
      const version = old.pragma('user_version', { simple: true }) as number;
      fresh.transaction(() => {
        for (const t of tables) fresh.exec(t.sql);
        for (const t of tables) out.rows[t.name] = copyRows(old, fresh, t.name, out);
        const hasSequence = old.prepare("SELECT 1 FROM sqlite_schema WHERE name = 'sqlite_sequence'").get() !== undefined;
        if (hasSequence) {
          for (const r of old.prepare('SELECT name, seq FROM sqlite_sequence').all() as { name: string; seq: number }[]) {
            fresh.prepare('INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)').run(r.name, r.seq);
          }
        }
        for (const s of schema) if (s.type !== 'table') fresh.exec(s.sql);
        fresh.pragma(`user_version = ${version}`);
      })();
    } finally {
      fresh.close();
    }
  } finally {
    old.close();
  }
  out.quarantined = `${path}.corrupt-${new Date().toISOString().replace(/[:.]/g, '-')}`;
  for (const s of ['', '-wal', '-shm']) if (existsSync(path + s)) renameSync(path + s, out.quarantined + s);
  renameSync(next, path);
  return out;
}

/** Copy the rows of `table` a table scan yields, up to the first unreadable page; returns how many. */
function copyRows(old: Database.Database, fresh: Database.Database, table: string, out: RebuildResult): number {
  let n = 0;
  try {
    const read = old.prepare(`SELECT * FROM ${quote(table)} NOT INDEXED ORDER BY ${tableOrder(old, table)}`).raw();
    const marks = read
      .columns()
      .map(() => '?')
      .join(', ');
    const insert = fresh.prepare(`INSERT OR IGNORE INTO ${quote(table)} VALUES (${marks})`);
    for (const row of read.iterate() as IterableIterator<unknown[]>) {
      insert.run(...row);
      n++;
    }
  } catch (err) {
    out.error ??= `${table}: ${(err as Error).message}`;
  }
  return n;
}

/**
 * The order of a table's own tree: rowid, or a WITHOUT ROWID table's primary key. Asking for it
 * makes SQLite read that tree; NOT INDEXED alone still lets it scan a covering index instead
 * (every secondary index of a WITHOUT ROWID table holds the whole primary key).
 */
function tableOrder(db: Database.Database, table: string): string {
  const list = db.pragma('table_list') as { schema: string; name: string; wr: number }[];
  const withoutRowid = list.some((t) => t.schema === 'main' && t.name === table && t.wr === 1);
  if (!withoutRowid) return 'rowid';
  const cols = (db.pragma(`table_info(${quote(table)})`) as { name: string; pk: number }[]).filter((c) => c.pk > 0).sort((a, b) => a.pk - b.pk);
  return cols.map((c) => quote(c.name)).join(', ');
}
