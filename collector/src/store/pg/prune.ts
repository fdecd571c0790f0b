import type { Pool } from 'pg';

/**
 * The age limit on PostgreSQL (`store_retention_days`): rows older than a time are deleted in
 * small statements, each its own transaction, so a writer never waits behind a long delete and
 * the space comes back to the tables' free space maps through autovacuum as it goes.
 *
 * Each statement picks at most n rows through the table's time index and deletes them by
 * physical address (ctid, a TID scan): no sort, no second index walk. It skips rows a writer
 * holds (SKIP LOCKED) and so never waits on one: a writer may wait for a delete, never the
 * reverse, and the two cannot deadlock (ingest only writes rows younger than rollup_grace_ms,
 * so with a retention of days they do not meet anyway). Registrations
 * (bt_registrations) are a catalogue of names, kept as long as the store.
 */

/** Each data table and the column its age is read from (epoch ms; indexed, schema-data.ts). */
export const PRUNED_TABLES: readonly (readonly [table: string, time: string])[] = [
  ['metric_points', 'interval_start'],
  ['metric_rollups', 'interval_start'],
  ['metric_packs', 'received_at'],
  ['traces', 'start_time'],
  ['active_stacks', 'ts'],
  ['events', 'ts'],
  ['snapshots', 'ts'],
];

function deleteSql(table: string, time: string): string {
  return `DELETE FROM ${table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM ${table} WHERE ${time} < $1 LIMIT $2 FOR UPDATE SKIP LOCKED))`;
}

export class PgPruner {
  constructor(private readonly pool: Pool) {}

  /** Delete at most `maxRows` rows older than `before` (epoch ms), table by table; resolves to how many went. */
  async prune(before: number, maxRows: number): Promise<number> {
    let left = Math.max(0, Math.floor(maxRows));
    let deleted = 0;
    for (const [table, time] of PRUNED_TABLES) {
      if (left === 0) break;
      const r = await this.pool.query({ name: `apm-prune-${table}`, text: deleteSql(table, time), values: [before, left] });
      const n = r.rowCount ?? 0;
      deleted += n;
      left -= n;
    }
    return deleted;
  }
}
