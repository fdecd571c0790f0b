import { Reader, Sketch, type Writer } from '@apm-sidecar/proto';
import { METRIC_COLUMN_NAMES, type MetricTable } from './schema';

/**
 * How a metric row is written and read. `metric_points` (one row per reporting interval) and
 * `metric_rollups` (one row per minute) have the same columns (schema.ts) and merge the same
 * way, so one statement text serves both:
 *
 *   (agent_id, project_id, series_key, interval_start)  identity: the primary key, interval first
 *   name, tags_json, kind, interval_ms                    what the series is
 *   count, sum, min, max                                  merged: added, added, min, max
 *   last, last_at                                         gauges: the value received last
 *   sketch                                                histograms: Sketch.encodeBuckets bytes
 */

/**
 * The SQL function merging two rows' sketches (bucket bytes), registered on the connection
 * by MetricStore: a row's sketch is merged where it lies instead of being read back first.
 */
export const MERGE_SKETCH_FUNCTION = 'apm_merge_sketch';

/**
 * Merge a point into its row, in SQL. min(a, b) with a NULL argument is NULL, hence the
 * coalesce: NULL means "no values". A gauge's last value is the one received last (last_at),
 * whatever order the packs came in. Sketches: the one present, or both merged.
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
        sketch = CASE WHEN sketch IS NULL OR excluded.sketch IS NULL THEN coalesce(excluded.sketch, sketch)
          ELSE ${MERGE_SKETCH_FUNCTION}(sketch, excluded.sketch) END`;
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
