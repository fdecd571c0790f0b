import Database from 'better-sqlite3';

/**
 * What can still be read from a quarantined retention file, copied into the fresh one. A file
 * fails SQLite's check when any page is damaged, often an index's: the tables' rows are then
 * intact, and they are acked metrics. Each table is read by a plain scan (rowid order, no index),
 * row by row until the end or the first unreadable page; the recovery that follows skips any row
 * whose content does not decode. Every retained kind is copied: frames and packs (the metrics),
 * seqs and instances (de-duplication and bindings, so nothing is applied twice), bt.
 */
const TABLES = [
  ['frames', 'instance_id, seq, interval_start, payload'],
  ['packs', 'pack_id, interval_start, interval_ms, points, body'],
  ['seqs', 'instance_id, seq, seen_at'],
  ['instances', 'instance_id, secret_hash, seen_at'],
  ['bt', 'name, ts, app, instance_id, pid, sent'],
] as const;

export interface Salvaged {
  rows: Record<string, number>;
  /** Why a table could not be read to its end (the first such reason), or null. */
  error: string | null;
}

/** Copy the readable rows of the file at `from` into `into` (one transaction); null when `from` cannot be opened at all. */
export function salvageInto(into: Database.Database, from: string): Salvaged | null {
  let old: Database.Database;
  try {
    old = new Database(from, { readonly: true, fileMustExist: true });
  } catch {
    return null;
  }
  const out: Salvaged = { rows: {}, error: null };
  try {
    into.transaction(() => {
      for (const [table, columns] of TABLES) {
        const marks = columns
          .split(',')
          .map(() => '?')
          .join(', ');
        const insert = into.prepare(`INSERT OR IGNORE INTO ${table} (${columns}) VALUES (${marks})`);
        let n = 0;
        try {
          // The table's own tree in rowid order, never an index (a damaged one would end the read).
          const rows = old.prepare(`SELECT ${columns} FROM ${table} NOT INDEXED ORDER BY rowid`).raw().iterate() as IterableIterator<unknown[]>;
          for (const row of rows) {
            insert.run(...row);
            n++;
          }
        } catch (err) {
          out.error ??= `${table}: ${(err as Error).message}`;
        }
        out.rows[table] = n;
      }
    })();
  } finally {
    old.close();
  }
  return out;
}
