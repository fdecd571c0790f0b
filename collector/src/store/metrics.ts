import type Database from 'better-sqlite3';
import { type MetricPoint, MetricKind, type Series, type Sketch, Writer } from '@apm-sidecar/proto';
import type { UpMetricPack } from '@apm-sidecar/proto/upstream';
import type { AgentRef, StoreMetricsResult } from '../types';
import { decodeSketch, encodeSketch, selectSketchSql, upsertSql } from './metric-table';
import { ROLLUP_MS, isMinuteFinal, minuteOf } from './rollup';
import { METRIC_TABLES, type MetricTable } from './schema';

/**
 * Storing metric packs exactly once. A pack id is unique per agent and stable across
 * resends; `metric_packs` remembers every pack stored, and a pack seen again is skipped.
 * Each point merges into its interval row (metric_points) and its minute row
 * (metric_rollups), keyed by (agent, series bytes, interval start):
 *
 *   count, sum  added          min, max  min/max          gauge last  the most recently received
 *   sketch      bucket counts added (Sketch.merge), stored as Sketch.encodeBuckets bytes
 *
 * A pack for a final minute (rollup.ts) is dropped and counted as late; the caller still acks it.
 */

const SERIES_CACHE_MAX = 50_000;

interface SeriesInfo {
  bytes: Buffer;
  tagsJson: string;
}

interface TableStatements {
  selectSketch: Database.Statement<[string, string, Buffer, number], { sketch: Buffer | null }>;
  upsert: Database.Statement;
}

export class MetricStore {
  private readonly insertPack: Database.Statement;
  private readonly tables: Record<MetricTable, TableStatements>;
  private readonly seriesCache = new Map<string, SeriesInfo>();
  private readonly sketchWriter = new Writer(4096);
  private readonly tx: (agent: AgentRef, packs: UpMetricPack[], now: number) => StoreMetricsResult;

  constructor(
    db: Database.Database,
    private readonly rollupGraceMs: number,
  ) {
    this.insertPack = db.prepare('INSERT OR IGNORE INTO metric_packs (agent_id, project_id, pack_id, received_at) VALUES (?, ?, ?, ?)');
    const statements = (t: MetricTable): TableStatements => ({
      selectSketch: db.prepare<[string, string, Buffer, number], { sketch: Buffer | null }>(selectSketchSql(t)),
      upsert: db.prepare(upsertSql(t)),
    });
    this.tables = Object.fromEntries(METRIC_TABLES.map((t) => [t, statements(t)])) as Record<MetricTable, TableStatements>;
    this.tx = db.transaction((agent: AgentRef, packs: UpMetricPack[], now: number) => this.storeIn(agent, packs, now)).immediate;
  }

  /** One IMMEDIATE transaction: all the packs, or (on error) none. */
  storeMetrics(agent: AgentRef, packs: UpMetricPack[], now: number): StoreMetricsResult {
    return this.tx(agent, packs, now);
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
      const minute = minuteOf(pack.intervalStart);
      for (const pt of pack.points) {
        this.mergePoint('metric_points', agent, pt, pack.intervalStart, pack.intervalMs, now);
        this.mergePoint('metric_rollups', agent, pt, minute, ROLLUP_MS, now);
        stored++;
      }
    }
    return { stored, duplicatePacks, late };
  }

  private seriesInfo(s: Series): SeriesInfo {
    let info = this.seriesCache.get(s.key);
    if (info === undefined) {
      if (this.seriesCache.size >= SERIES_CACHE_MAX) this.seriesCache.clear();
      info = { bytes: Buffer.from(s.key, 'latin1'), tagsJson: JSON.stringify(s.tags) };
      this.seriesCache.set(s.key, info);
    }
    return info;
  }

  /** Merge a point into its row of `table` (the interval starting at `start`, `ms` long). */
  private mergePoint(table: MetricTable, agent: AgentRef, pt: MetricPoint, start: number, ms: number, now: number): void {
    const st = this.tables[table];
    const s = pt.series;
    const info = this.seriesInfo(s);
    let sketch: Buffer | null = null;
    if (s.kind === MetricKind.Histogram && pt.sketch !== null) {
      const row = st.selectSketch.get(agent.agentId, agent.projectId, info.bytes, start);
      let merged: Sketch = pt.sketch;
      if (row?.sketch != null) {
        merged = decodeSketch(row.sketch);
        merged.merge(pt.sketch);
      }
      sketch = encodeSketch(merged, this.sketchWriter);
    }
    const has = pt.count > 0 && Number.isFinite(pt.min) && Number.isFinite(pt.max);
    const last = s.kind === MetricKind.Gauge && Number.isFinite(pt.last) ? pt.last : null;
    // In METRIC_COLUMN_NAMES order.
    st.upsert.run(
      agent.agentId,
      agent.projectId,
      info.bytes,
      s.name,
      info.tagsJson,
      s.kind,
      start,
      ms,
      pt.count,
      pt.sum,
      has ? pt.min : null,
      has ? pt.max : null,
      last,
      last === null ? null : now,
      sketch,
    );
  }
}
