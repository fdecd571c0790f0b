import { type MetricPoint, MetricKind, type Series, Sketch, Writer } from '@apm-sidecar/proto';
import type { UpMetricPack } from '@apm-sidecar/proto/upstream';
import type { Pool, PoolClient } from 'pg';
import type { AgentRef, StoreMetricsResult } from '../../types';
import { encodeSketch } from '../metric-table';
import { ROLLUP_MS, isMinuteFinal, minuteOf } from '../rollup';
import type { MetricTable } from '../schema';
import { withAgentLock } from './agent-tx';
import { OID, bytesArray, float8Array, int2Array, int8Array, textArray } from './binary-array';
import { mergeEncodedSketch } from './sketch-bytes';
import { pgText } from './sql-values';

/**
 * Storing metric packs exactly once on PostgreSQL, with the rules of the SQLite store
 * (../metrics.ts, ../metric-table.ts): a pack id is stored once per agent (`metric_packs`; its
 * primary key decides between collectors), a pack for a final minute is dropped and counted
 * as late, and each point merges into its interval row and its minute rollup:
 *
 *   count, sum  added          min, max  min/max          gauge last  the most recently received
 *   sketch      bucket counts added (Sketch.merge), stored as Sketch.encodeBuckets bytes
 *
 * One transaction per call, under the agent's lock (agent-tx.ts), in four round trips:
 *
 *   1  BEGIN and the lock
 *   2  the pack ids inserted (ON CONFLICT DO NOTHING RETURNING: the new ones), and the stored
 *      sketches of the histogram rows the batch touches (read after the lock, so current)
 *   3  both tables' rows upserted from binary arrays (unnest, binary-array.ts), one row each:
 *      the batch's points of one row are merged here first (a statement may not update a row twice)
 *   4  COMMIT
 *
 * Sums of one row are added in another order than SQLite's, one point at a time, when a
 * batch holds several points of a row that already exists: equal up to rounding.
 */

const SERIES_CACHE_MAX = 50_000;

/** A series' column values, encoded once. */
interface SeriesCols {
  key: Buffer;
  name: Buffer;
  tags: Buffer;
  kind: number;
}

/** One row of a table as this batch changes it. */
interface Row {
  s: SeriesCols;
  start: number;
  ms: number;
  count: number;
  sum: number;
  min: number | null;
  max: number | null;
  last: number | null;
  /** The batch's sketch; `own` once it is a copy this store may add to (a point's own sketch is never changed). */
  sketch: Sketch | null;
  own: boolean;
}

/** Rows (or anything else) of one table by interval start, then series. */
type ByRow<T> = Map<number, Map<SeriesCols, T>>;

function getRow<T>(m: ByRow<T>, start: number, s: SeriesCols): T | undefined {
  return m.get(start)?.get(s);
}

function setRow<T>(m: ByRow<T>, start: number, s: SeriesCols, v: T): void {
  let inner = m.get(start);
  if (inner === undefined) {
    inner = new Map();
    m.set(start, inner);
  }
  inner.set(s, v);
}

const COLUMNS = 'agent_id, project_id, series_key, name, tags_json, kind, interval_start, interval_ms, count, sum, min, max, last, last_at, sketch';
const ARRAY_TYPES = ['bytea', 'text', 'text', 'int2', 'float8', 'int8', 'int8', 'float8', 'float8', 'float8', 'float8', 'int8', 'bytea'];

/** Insert-or-merge of `table`'s rows from arrays $first…$first+12 (agent $1, project $2). */
function upsertSql(table: MetricTable, first: number): string {
  const arrays = ARRAY_TYPES.map((t, i) => `$${first + i}::${t}[]`).join(', ');
  const newer = 'excluded.last IS NOT NULL AND (t.last IS NULL OR excluded.last_at >= t.last_at)';
  return `INSERT INTO ${table} AS t (${COLUMNS})
    SELECT $1, $2, * FROM unnest(${arrays})
    ON CONFLICT (agent_id, project_id, interval_start, series_key) DO UPDATE SET
      count = t.count + excluded.count,
      sum = t.sum + excluded.sum,
      min = least(t.min, excluded.min),
      max = greatest(t.max, excluded.max),
      last = CASE WHEN ${newer} THEN excluded.last ELSE t.last END,
      last_at = CASE WHEN ${newer} THEN excluded.last_at ELSE t.last_at END,
      sketch = coalesce(excluded.sketch, t.sketch)`;
}

/** Both tables in one statement; the rollups' arrays follow the points'. */
const UPSERT_BOTH = `WITH points AS (${upsertSql('metric_points', 3)})
  ${upsertSql('metric_rollups', 3 + ARRAY_TYPES.length)}`;

/**
 * The new pack ids ($4, received at $3), then the stored sketches of the rows named by
 * ($5 starts, $6 series) in metric_points and ($7, $8) in metric_rollups.
 */
const PACKS_AND_SKETCHES = `WITH new AS (
    INSERT INTO metric_packs (agent_id, project_id, pack_id, received_at)
    SELECT $1, $2, p, $3::int8 FROM unnest($4::text[]) AS p
    ON CONFLICT DO NOTHING RETURNING pack_id)
  SELECT 0 AS t, pack_id AS id, NULL::float8 AS start, NULL::bytea AS series, NULL::bytea AS sketch FROM new
  UNION ALL
  SELECT 1, NULL, m.interval_start, m.series_key, m.sketch FROM unnest($5::float8[], $6::bytea[]) AS k(start, series)
    JOIN metric_points m ON m.agent_id = $1 AND m.project_id = $2 AND m.interval_start = k.start AND m.series_key = k.series
    WHERE m.sketch IS NOT NULL
  UNION ALL
  SELECT 2, NULL, m.interval_start, m.series_key, m.sketch FROM unnest($7::float8[], $8::bytea[]) AS k(start, series)
    JOIN metric_rollups m ON m.agent_id = $1 AND m.project_id = $2 AND m.interval_start = k.start AND m.series_key = k.series
    WHERE m.sketch IS NOT NULL`;

interface PackOrSketchRow {
  t: number;
  id: string | null;
  start: number | null;
  series: Buffer | null;
  sketch: Buffer | null;
}

/** Histogram rows of one table whose stored sketch is needed, each once. */
class SketchKeys {
  private readonly seen: ByRow<true> = new Map();
  readonly starts: number[] = [];
  readonly series: Buffer[] = [];
  add(start: number, s: SeriesCols): void {
    if (getRow(this.seen, start, s) !== undefined) return;
    setRow(this.seen, start, s, true);
    this.starts.push(start);
    this.series.push(s.key);
  }
}

export class PgMetricStore {
  /** By series key (the latin1 image of its bytes, as the decoder and the sketch answers name it). */
  private readonly seriesCache = new Map<string, SeriesCols>();
  private readonly sketchWriter = new Writer(4096);

  constructor(
    private readonly pool: Pool,
    private readonly rollupGraceMs: number,
  ) {}

  /** One transaction: all the packs, or (on error) none. */
  async storeMetrics(agent: AgentRef, packs: UpMetricPack[], now: number): Promise<StoreMetricsResult> {
    if (packs.length === 0) return { stored: 0, duplicatePacks: 0, late: 0 };
    return withAgentLock(this.pool, agent, (c) => this.storeIn(c, agent, packs, now));
  }

  private async storeIn(c: PoolClient, agent: AgentRef, packs: UpMetricPack[], now: number): Promise<StoreMetricsResult> {
    const late = packs.map((p) => isMinuteFinal(p.intervalStart, now, this.rollupGraceMs));
    // The sketches to read are those of every pack not late: a pack that turns out to be a
    // duplicate only costs a row read for nothing.
    const pointKeys = new SketchKeys();
    const rollupKeys = new SketchKeys();
    packs.forEach((pack, i) => {
      if (late[i] === true) return;
      const minute = minuteOf(pack.intervalStart);
      for (const pt of pack.points) {
        if (pt.series.kind !== MetricKind.Histogram || pt.sketch === null) continue;
        const s = this.cols(pt.series);
        pointKeys.add(pack.intervalStart, s);
        rollupKeys.add(minute, s);
      }
    });
    const res = await c.query<PackOrSketchRow>({
      name: 'apm-metric-packs',
      text: PACKS_AND_SKETCHES,
      values: [
        agent.agentId,
        agent.projectId,
        now,
        textArray(packs.map((p) => p.packId)),
        float8Array(pointKeys.starts),
        bytesArray(pointKeys.series),
        float8Array(rollupKeys.starts),
        bytesArray(rollupKeys.series),
      ],
    });
    const fresh = new Set<string>();
    const stored: [ByRow<Buffer>, ByRow<Buffer>] = [new Map(), new Map()];
    for (const r of res.rows) {
      if (r.t === 0) fresh.add(r.id as string);
      else if (r.sketch !== null && r.start !== null && r.series !== null) {
        const s = this.seriesCache.get(r.series.toString('latin1'));
        if (s !== undefined) setRow(stored[r.t - 1] as ByRow<Buffer>, r.start, s, r.sketch);
      }
    }

    let storedPoints = 0;
    let duplicatePacks = 0;
    let latePoints = 0;
    const points: ByRow<Row> = new Map();
    const rollups: ByRow<Row> = new Map();
    packs.forEach((pack, i) => {
      // A pack id twice in one batch: the first is the new one, as in SQLite.
      if (!fresh.delete(pgText(pack.packId))) {
        duplicatePacks++;
        return;
      }
      if (late[i] === true) {
        latePoints += pack.points.length;
        return;
      }
      const minute = minuteOf(pack.intervalStart);
      for (const pt of pack.points) {
        const s = this.cols(pt.series);
        merge(points, s, pt, pack.intervalStart, pack.intervalMs);
        merge(rollups, s, pt, minute, ROLLUP_MS);
        storedPoints++;
      }
    });
    if (storedPoints > 0) {
      const values = [agent.agentId, agent.projectId, ...this.arrays(points, stored[0], now), ...this.arrays(rollups, stored[1], now)];
      await c.query({ name: 'apm-metric-upsert', text: UPSERT_BOTH, values });
    }
    return { stored: storedPoints, duplicatePacks, late: latePoints };
  }

  private cols(s: Series): SeriesCols {
    let e = this.seriesCache.get(s.key);
    if (e === undefined) {
      if (this.seriesCache.size >= SERIES_CACHE_MAX) this.seriesCache.clear();
      e = {
        key: Buffer.from(s.key, 'latin1'),
        name: Buffer.from(pgText(s.name), 'utf8'),
        tags: Buffer.from(JSON.stringify(s.tags), 'utf8'),
        kind: s.kind,
      };
      this.seriesCache.set(s.key, e);
    }
    return e;
  }

  /** The 13 binary arrays of `rows`, in ARRAY_TYPES order; sketches merged with the stored ones. */
  private arrays(rows: ByRow<Row>, storedSketches: ByRow<Buffer>, now: number): Buffer[] {
    const key: Buffer[] = [];
    const name: Buffer[] = [];
    const tags: Buffer[] = [];
    const kind: number[] = [];
    const start: number[] = [];
    const ms: number[] = [];
    const count: number[] = [];
    const sum: number[] = [];
    const min: (number | null)[] = [];
    const max: (number | null)[] = [];
    const last: (number | null)[] = [];
    const lastAt: (number | null)[] = [];
    const sketch: (Buffer | null)[] = [];
    for (const byStart of rows.values()) {
      for (const r of byStart.values()) {
        key.push(r.s.key);
        name.push(r.s.name);
        tags.push(r.s.tags);
        kind.push(r.s.kind);
        start.push(r.start);
        ms.push(r.ms);
        count.push(r.count);
        sum.push(r.sum);
        min.push(r.min);
        max.push(r.max);
        last.push(r.last);
        lastAt.push(r.last === null ? null : now);
        sketch.push(r.sketch === null ? null : this.mergedSketch(r.sketch, getRow(storedSketches, r.start, r.s)));
      }
    }
    return [
      bytesArray(key),
      bytesArray(name, OID.text),
      bytesArray(tags, OID.text),
      int2Array(kind),
      float8Array(start),
      int8Array(ms),
      int8Array(count),
      float8Array(sum),
      float8Array(min),
      float8Array(max),
      float8Array(last),
      int8Array(lastAt),
      bytesArray(sketch),
    ];
  }

  private mergedSketch(batch: Sketch, stored: Buffer | undefined): Buffer {
    return stored === undefined ? encodeSketch(batch, this.sketchWriter) : mergeEncodedSketch(stored, batch, this.sketchWriter);
  }
}

/** Merge a point into its row of `rows` (the interval starting at `start`, `ms` long), as SQLite's upsert would. */
function merge(rows: ByRow<Row>, s: SeriesCols, pt: MetricPoint, start: number, ms: number): void {
  const has = pt.count > 0 && Number.isFinite(pt.min) && Number.isFinite(pt.max);
  const min = has ? pt.min : null;
  const max = has ? pt.max : null;
  const last = s.kind === MetricKind.Gauge && Number.isFinite(pt.last) ? pt.last : null;
  const sketch = s.kind === MetricKind.Histogram ? pt.sketch : null;
  const r = getRow(rows, start, s);
  if (r === undefined) {
    setRow(rows, start, s, { s, start, ms, count: pt.count, sum: pt.sum, min, max, last, sketch, own: false });
    return;
  }
  r.count += pt.count;
  r.sum += pt.sum;
  if (min !== null) r.min = r.min === null ? min : Math.min(r.min, min);
  if (max !== null) r.max = r.max === null ? max : Math.max(r.max, max);
  if (last !== null) r.last = last;
  if (sketch === null) return;
  if (r.sketch === null) {
    r.sketch = sketch;
    return;
  }
  if (!r.own) {
    const copy = new Sketch();
    copy.merge(r.sketch);
    r.sketch = copy;
    r.own = true;
  }
  r.sketch.merge(sketch);
}
