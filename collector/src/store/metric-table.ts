import { Reader, Sketch, type Writer } from '@apm-sidecar/proto';

/**
 * The one definition of a metric table. `metric_points` (one row per reporting interval) and
 * `metric_rollups` (one row per minute) have the same columns and merge the same way; the
 * migrations that create them and the statements that write them are made from here.
 *
 *   (agent_id, project_id, series_key, interval_start)  identity: the primary key, interval first
 *   name, tags_json, kind, interval_ms                    what the series is
 *   count, sum, min, max                                  merged: added, added, min, max
 *   last, last_at                                         gauges: the value received last
 *   sketch                                                histograms: Sketch.encodeBuckets bytes
 */

export const METRIC_TABLES = ['metric_points', 'metric_rollups'] as const;
export type MetricTable = (typeof METRIC_TABLES)[number];

/** Every column after the agent (and, from schema 5, project) columns, in table order. */
const SERIES_COLUMNS: readonly string[] = [
  'series_key BLOB NOT NULL',
  'name TEXT NOT NULL',
  'tags_json TEXT NOT NULL',
  'kind INTEGER NOT NULL',
  'interval_start INTEGER NOT NULL',
  'interval_ms INTEGER NOT NULL',
  'count INTEGER NOT NULL',
  'sum REAL NOT NULL',
  'min REAL',
  'max REAL',
  'last REAL',
  'last_at INTEGER',
  'sketch BLOB',
];

const AGENT_COLUMN = 'agent_id TEXT NOT NULL';
const PROJECT_COLUMN = 'project_id TEXT NOT NULL';

/** The columns of the current schema, by name, in table order. */
export const METRIC_COLUMN_NAMES: readonly string[] = [AGENT_COLUMN, PROJECT_COLUMN, ...SERIES_COLUMNS].map((c) => c.split(' ')[0] as string);

/** The columns without project_id (schemas 1 to 4), by name: what migration 3 copies. */
export const METRIC_COLUMN_NAMES_BEFORE_PROJECTS: readonly string[] = METRIC_COLUMN_NAMES.filter((c) => c !== 'project_id');

/**
 * `CREATE TABLE` of a metric table as the migrations wrote it (the text is kept in
 * sqlite_master, so it must not change). `withProject`: schema 5 on.
 */
export function createMetricTableSql(table: string, withProject: boolean, primaryKey: string): string {
  const columns = [AGENT_COLUMN, ...(withProject ? [PROJECT_COLUMN] : []), ...SERIES_COLUMNS, `PRIMARY KEY (${primaryKey})`];
  return `  CREATE TABLE ${table} (\n${columns.map((c) => `    ${c}`).join(',\n')}\n  );`;
}

/**
 * Merge a point into its row, in SQL. The caller merged the sketch already (it passes the
 * merged bytes). min(a, b) with a NULL argument is NULL, hence the coalesce: NULL means "no values".
 * A gauge's last value is the one received last (last_at), whatever order the packs came in.
 */
export function upsertSql(table: MetricTable): string {
  const newer = 'excluded.last IS NOT NULL AND (last IS NULL OR excluded.last_at >= last_at)';
  return `
      INSERT INTO ${table} (${METRIC_COLUMN_NAMES.join(', ')})
      VALUES (${METRIC_COLUMN_NAMES.map(() => '?').join(', ')})
      ON CONFLICT (agent_id, project_id, interval_start, series_key) DO UPDATE SET
        count = count + excluded.count,
        sum = sum + excluded.sum,
        min = coalesce(min(min, excluded.min), min, excluded.min),
        max = coalesce(max(max, excluded.max), max, excluded.max),
        last = CASE WHEN ${newer} THEN excluded.last ELSE last END,
        last_at = CASE WHEN ${newer} THEN excluded.last_at ELSE last_at END,
        sketch = coalesce(excluded.sketch, sketch)`;
}

/** The stored sketch of one row (to merge a new one into). */
export function selectSketchSql(table: MetricTable): string {
  return `SELECT sketch FROM ${table} WHERE agent_id = ? AND project_id = ? AND series_key = ? AND interval_start = ?`;
}

/** A metric row as the queries read it. */
export interface MetricDbRow {
  agent_id: string;
  project_id: string;
  name: string;
  tags_json: string;
  kind: number;
  interval_start: number;
  interval_ms: number;
  count: number;
  sum: number;
  min: number | null;
  max: number | null;
  last: number | null;
  sketch: Buffer | null;
}

export function decodeSketch(bytes: Buffer): Sketch {
  const s = new Sketch();
  s.decodeBuckets(new Reader(bytes));
  return s;
}

/** The sketch's bucket bytes, copied out of `writer` (which is reused). */
export function encodeSketch(s: Sketch, writer: Writer): Buffer {
  s.encodeBuckets(writer);
  return writer.body();
}
