import type Database from 'better-sqlite3';

/**
 * Deleting stored rows by age (DESIGN §7: `store_retention_days`), in small batches so that
 * ingest, which writes to the same file, never waits for more than one batch: SQLite has one
 * writer at a time, and a transaction deleting millions of rows would hold it for seconds.
 *
 * Each table is pruned by its own time column, through an index on it (schema.ts, migrations 1
 * and 7), oldest first within a batch:
 *
 *   metric_points, metric_rollups   interval_start   (epoch ms; a rollup row's start is its minute)
 *   metric_packs                    received_at      (when the collector stored the pack)
 *   traces                          start_time       (the transaction's start, epoch ms)
 *   events, snapshots, active_stacks  ts             (epoch ms)
 *
 * A pack id is remembered so that a resent pack is skipped; a sidecar keeps packs for minutes,
 * so forgetting ids after `store_retention_days` (at least one day) cannot let a resend count twice.
 * Registrations (bt_registrations) are names, not data over time: they are kept.
 */

/** A table, the column its age is read from, and how a row is named for the delete. */
const TABLES: readonly { table: string; time: string; key: string }[] = [
  { table: 'metric_points', time: 'interval_start', key: 'rowid' },
  { table: 'metric_rollups', time: 'interval_start', key: 'rowid' },
  // WITHOUT ROWID: a row is its primary key.
  { table: 'metric_packs', time: 'received_at', key: '(agent_id, project_id, pack_id)' },
  { table: 'traces', time: 'start_time', key: 'rowid' },
  { table: 'events', time: 'ts', key: 'rowid' },
  { table: 'snapshots', time: 'ts', key: 'rowid' },
  { table: 'active_stacks', time: 'ts', key: 'rowid' },
];

export const PRUNED_TABLES: readonly string[] = TABLES.map((t) => t.table);

export class SqlitePruner {
  private readonly deletes: Database.Statement<[number, number]>[];
  private readonly tx: (before: number, maxRows: number) => number;

  constructor(db: Database.Database) {
    this.deletes = TABLES.map(({ table, time, key }) =>
      db.prepare<[number, number]>(
        `DELETE FROM ${table} WHERE ${key} IN (SELECT ${key === 'rowid' ? 'rowid' : key.slice(1, -1)} FROM ${table} WHERE ${time} < ? ORDER BY ${time} LIMIT ?)`,
      ),
    );
    this.tx = db.transaction((before: number, maxRows: number) => this.pruneIn(before, maxRows)).immediate;
  }

  /**
   * Delete at most `maxRows` rows, in total over every table, older than `before` (epoch ms), in one
   * IMMEDIATE transaction. Returns how many went: fewer than `maxRows` means nothing older is left.
   */
  prune(before: number, maxRows: number): number {
    const max = Math.floor(maxRows);
    if (!Number.isFinite(before) || !(max > 0)) return 0;
    return this.tx(before, max);
  }

  private pruneIn(before: number, maxRows: number): number {
    let left = maxRows;
    for (const del of this.deletes) {
      if (left === 0) break;
      left -= del.run(before, left).changes;
    }
    return maxRows - left;
  }
}
