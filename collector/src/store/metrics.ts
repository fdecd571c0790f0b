import type Database from 'better-sqlite3';
import { type MetricPoint, MetricKind, Writer, mergeBucketBytes } from '@apm-sidecar/proto';
import type { UpMetricPack } from '@apm-sidecar/proto/upstream';
import type { AgentRef, StoreMetricsResult } from '../types';
import { MERGE_SKETCH_FUNCTION, encodeSketch, upsertSql } from './metric-table';
import { ROLLUP_MS, isMinuteFinal, minuteOf } from './rollup';
import { METRIC_TABLES, type MetricTable } from './schema';

/**
 * Storing metric packs exactly once. A pack id is unique per agent and stable across
 * resends; `metric_packs` remembers every pack stored, and a pack seen again is skipped.
 * Each point merges into its interval row (metric_points) and its minute row
 * (metric_rollups), keyed by (agent, series bytes, interval start):
 *
 *   count, sum  added          min, max  min/max          gauge last  the most recently received
 *   sketch      bucket counts added (mergeBucketBytes, in SQL), stored as Sketch.encodeBuckets bytes
 *
 * The points of one batch that share a row are merged here first, so each row is written
 * once per batch (a replay after an outage carries many intervals of each minute). A
 * histogram's sketch is written as the bytes it arrived in, and merged into an existing
 * row by SQL (MERGE_SKETCH_FUNCTION) rather than read back and merged here.
 *
 * A pack for a final minute (rollup.ts) is dropped and counted as late; the caller still acks it.
 */

const SERIES_CACHE_MAX = 50_000;

interface SeriesInfo {
  bytes: Buffer;
  tagsJson: string;
}

/** One row's worth of a batch's points, merged. */
interface PendingRow {
  pt: MetricPoint;
  count: number;
  sum: number;
  /** Infinity / -Infinity while no point with values merged in. */
  min: number;
  max: number;
  /** Gauges: the value of the point that came last in the batch; NaN otherwise. */
  last: number;
  sketch: Buffer | null;
}

export class MetricStore {
  private readonly insertPack: Database.Statement;
  private readonly upserts: Record<MetricTable, Database.Statement>;
  private readonly seriesCache = new Map<string, SeriesInfo>();
  /** Per table, the batch's rows by interval start, then series key. */
  private readonly pending: Record<MetricTable, Map<number, Map<string, PendingRow>>> = { metric_points: new Map(), metric_rollups: new Map() };
  private readonly tx: (agent: AgentRef, packs: UpMetricPack[], now: number) => StoreMetricsResult;

  constructor(
    db: Database.Database,
    private readonly rollupGraceMs: number,
  ) {
    db.function(MERGE_SKETCH_FUNCTION, { deterministic: true }, (a: unknown, b: unknown) => mergeBucketBytes(a as Buffer, b as Buffer));
    this.insertPack = db.prepare('INSERT OR IGNORE INTO metric_packs (agent_id, project_id, pack_id, received_at) VALUES (?, ?, ?, ?)');
    this.upserts = Object.fromEntries(METRIC_TABLES.map((t) => [t, db.prepare(upsertSql(t))])) as Record<MetricTable, Database.Statement>;
    this.tx = db.transaction((agent: AgentRef, packs: UpMetricPack[], now: number) => this.storeIn(agent, packs, now)).immediate;
  }

  /** One IMMEDIATE transaction: all the packs, or (on error) none. */
  storeMetrics(agent: AgentRef, packs: UpMetricPack[], now: number): StoreMetricsResult {
    try {
      return this.tx(agent, packs, now);
    } finally {
      for (const t of METRIC_TABLES) this.pending[t].clear();
    }
  }

  private storeIn(agent: AgentRef, packs: UpMetricPack[], now: number): StoreMetricsResult {
    let stored = 0;
    let duplicatePacks = 0;
    let late = 0;
    for (const pack of packs) {
      if (this.insertPack.run(agent.agentId, agent.projectId, pack.packId, now).changes === 0) {
        duplicatePacks++;
        continue;
      }
      if (isMinuteFinal(pack.intervalStart, now, this.rollupGraceMs)) {
        late += pack.points.length;
        continue;
      }
      const points = this.rowsOf('metric_points', pack.intervalStart);
      const rollups = this.rowsOf('metric_rollups', minuteOf(pack.intervalStart));
      for (const pt of pack.points) {
        merge(points, pt);
        merge(rollups, pt);
        stored++;
      }
    }
    for (const pack of packs) {
      this.write('metric_points', agent, pack.intervalStart, pack.intervalMs, now);
      this.write('metric_rollups', agent, minuteOf(pack.intervalStart), ROLLUP_MS, now);
    }
    return { stored, duplicatePacks, late };
  }

  private rowsOf(table: MetricTable, start: number): Map<string, PendingRow> {
    const byStart = this.pending[table];
    let rows = byStart.get(start);
    if (rows === undefined) {
      rows = new Map();
      byStart.set(start, rows);
    }
    return rows;
  }

  private seriesInfo(pt: MetricPoint): SeriesInfo {
    const s = pt.series;
    let info = this.seriesCache.get(s.key);
    if (info === undefined) {
      if (this.seriesCache.size >= SERIES_CACHE_MAX) this.seriesCache.clear();
      info = { bytes: Buffer.from(s.key, 'latin1'), tagsJson: JSON.stringify(s.tags) };
      this.seriesCache.set(s.key, info);
    }
    return info;
  }

  /** Write (and forget) the batch's rows of `table` for the interval starting at `start`, `ms` long. */
  private write(table: MetricTable, agent: AgentRef, start: number, ms: number, now: number): void {
    const rows = this.pending[table].get(start);
    if (rows === undefined) return;
    this.pending[table].delete(start);
    const upsert = this.upserts[table];
    for (const row of rows.values()) {
      const s = row.pt.series;
      const info = this.seriesInfo(row.pt);
      const has = row.count > 0 && Number.isFinite(row.min) && Number.isFinite(row.max);
      const last = s.kind === MetricKind.Gauge && Number.isFinite(row.last) ? row.last : null;
      // In METRIC_COLUMN_NAMES order.
      upsert.run(
        agent.agentId,
        agent.projectId,
        info.bytes,
        s.name,
        info.tagsJson,
        s.kind,
        start,
        ms,
        row.count,
        row.sum,
        has ? row.min : null,
        has ? row.max : null,
        last,
        last === null ? null : now,
        s.kind === MetricKind.Histogram ? (row.sketch ?? sketchBytesOf(row.pt)) : null,
      );
    }
  }
}

/** Merge a point into the batch's row for its series (count, sum, min, max, last as the SQL upsert does). */
function merge(rows: Map<string, PendingRow>, pt: MetricPoint): void {
  const row = rows.get(pt.series.key);
  const has = pt.count > 0 && Number.isFinite(pt.min) && Number.isFinite(pt.max);
  if (row === undefined) {
    rows.set(pt.series.key, {
      pt,
      count: pt.count,
      sum: pt.sum,
      min: has ? pt.min : Number.POSITIVE_INFINITY,
      max: has ? pt.max : Number.NEGATIVE_INFINITY,
      last: pt.last,
      sketch: null,
    });
    return;
  }
  row.count += pt.count;
  row.sum += pt.sum;
  if (has && pt.min < row.min) row.min = pt.min;
  if (has && pt.max > row.max) row.max = pt.max;
  if (pt.series.kind === MetricKind.Gauge && Number.isFinite(pt.last)) row.last = pt.last;
  if (pt.series.kind === MetricKind.Histogram) {
    const a = row.sketch ?? sketchBytesOf(row.pt);
    const b = sketchBytesOf(pt);
    row.sketch = a === null ? b : b === null ? a : mergeBucketBytes(a, b);
  }
}

const sketchWriter = new Writer(4096);

/** A histogram point's bucket bytes: as received when the decoder kept them, else encoded. */
function sketchBytesOf(pt: MetricPoint): Buffer | null {
  if (pt.sketchBytes !== undefined) return pt.sketchBytes;
  return pt.sketch === null ? null : encodeSketch(pt.sketch, sketchWriter);
}
