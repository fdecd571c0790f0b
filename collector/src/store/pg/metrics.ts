import { type MetricPoint, MetricKind, type Series, Writer } from '@apm-sidecar/proto';
import type { UpMetricPack } from '@apm-sidecar/proto/upstream';
import type { Pool, PoolClient } from 'pg';
import type { AgentRef, StoreMetricsResult } from '../../types';
import { encodeSketch } from '../metric-table';
import { ROLLUP_MS, isMinuteFinal, minuteOf } from '../rollup';
import type { MetricTable } from '../schema';
import { withAgentLock } from './agent-tx';
import { ArrayBatch, OID, bytesArray, float8Array, textArray } from './binary-array';
import { queryBound } from './bound-query';
import { mergeSketchBytes } from './sketch-bytes';
import { pgText } from './sql-values';

/**
 * Storing metric packs exactly once on PostgreSQL, with the rules of the SQLite store
 * (../metrics.ts, ../metric-table.ts): a pack id is stored once per agent (`metric_packs`; its
 * primary key decides between collectors), a pack for a final minute is dropped and counted
 * as late, and each point merges into its interval row and its minute rollup:
 *
 *   count, sum  added          min, max  min/max          gauge last  the most recently received
 *   sketch      bucket counts added (mergeSketchBytes, sketch-bytes.ts), stored as Sketch.encodeBuckets bytes
 *
 * One transaction per call, under the agent's lock (agent-tx.ts), in four round trips:
 *
 *   1  BEGIN and the lock
 *   2  the pack ids inserted (ON CONFLICT DO NOTHING RETURNING: the new ones), and the stored
 *      sketches of the histogram rows the batch touches (read after the lock, so current), each
 *      by its primary key and named by its place in the keys sent
 *   3  both tables' rows upserted from binary arrays (unnest, binary-array.ts), one row each,
 *      in a Bind message built here (bound-query.ts):
 *      the batch's points of one row are merged here first (a statement may not update a row twice)
 *   4  COMMIT
 *
 * The batch's rows are built as columns (TableRows) before the pack ids are known, from every
 * pack not late: the common batch is all new packs, and those columns are what is sent. When
 * some pack turns out to be stored already (a resend), the rows are built again from the new
 * packs only. A histogram's sketch is the bytes it arrived in (MetricPoint.sketchBytes), merged
 * on the bytes with the batch's other points of its row and with the stored sketch.
 *
 * Sums of one row are added in another order than SQLite's, one point at a time, when a
 * batch holds several points of a row that already exists: equal up to rounding.
 */

const SERIES_CACHE_MAX = 50_000;

/** A series' column values, encoded once. */
interface SeriesCols {
  /** The series key as the decoder names it (Series.key). */
  id: string;
  key: Buffer;
  name: Buffer;
  tags: Buffer;
  kind: number;
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

const UPSERT_NAME = 'apm-metric-upsert';

/** Both tables in one statement; the rollups' arrays follow the points'. */
const UPSERT_BOTH = `WITH points AS (${upsertSql('metric_points', 3)})
  ${upsertSql('metric_rollups', 3 + ARRAY_TYPES.length)}`;

/**
 * The stored sketches of the keys (starts $s, series $s+1) of `table` that have one, in one
 * bytea: per sketch, its key's 1-based place (int4), its length (int4), its bytes. One value
 * rather than a row per sketch: the driver parses a row into an object of strings, and the
 * sketches are most of what the batch reads.
 */
function storedSketchesSql(t: number, table: MetricTable, s: number): string {
  // LIMIT keeps the subquery a lookup per key (a parameterized primary-key probe), whatever the
  // table's statistics say: joined plainly, a plan made while they were stale scans all of the
  // agent's rows for every batch.
  return `SELECT ${t}, NULL, string_agg(int4send(k.i::int4) || int4send(length(m.sketch)) || m.sketch, ''::bytea)
    FROM unnest($${s}::float8[], $${s + 1}::bytea[]) WITH ORDINALITY AS k(start, series, i)
    CROSS JOIN LATERAL (SELECT sketch FROM ${table}
      WHERE agent_id = $1 AND project_id = $2 AND interval_start = k.start AND series_key = k.series AND sketch IS NOT NULL LIMIT 1) m`;
}

/**
 * The new pack ids ($4, received at $3), a row each, then the stored sketches of the rows
 * named by ($5 starts, $6 series) in metric_points and ($7, $8) in metric_rollups, a row each
 * table (storedSketchesSql; NULL when none).
 */
const PACKS_AND_SKETCHES = `WITH new AS (
    INSERT INTO metric_packs (agent_id, project_id, pack_id, received_at)
    SELECT $1, $2, p, $3::int8 FROM unnest($4::text[]) AS p
    ON CONFLICT DO NOTHING RETURNING pack_id)
  SELECT 0 AS t, pack_id AS id, NULL::bytea AS sketches FROM new
  UNION ALL
  ${storedSketchesSql(1, 'metric_points', 5)}
  UNION ALL
  ${storedSketchesSql(2, 'metric_rollups', 7)}`;

interface PackOrSketchRow {
  t: number;
  id: string | null;
  sketches: Buffer | null;
}

/**
 * The batch's rows of one table, as columns (row r is element r of each), each row once:
 * found by interval start, then series. NaN in min, max and last is "none" (NULL).
 */
class TableRows {
  private readonly index = new Map<number, Map<SeriesCols, number>>();
  n = 0;
  readonly series: SeriesCols[] = [];
  readonly kind: number[] = [];
  readonly start: number[] = [];
  readonly ms: number[] = [];
  readonly count: number[] = [];
  readonly sum: number[] = [];
  readonly min: number[] = [];
  readonly max: number[] = [];
  readonly last: number[] = [];
  readonly sketch: (Buffer | null)[] = [];
  /** The histogram rows, in order: the keys whose stored sketch is read. */
  readonly histograms: number[] = [];

  /** The rows of the interval starting at `start` (to look up once per pack). */
  rowsAt(start: number): Map<SeriesCols, number> {
    let rows = this.index.get(start);
    if (rows === undefined) {
      rows = new Map();
      this.index.set(start, rows);
    }
    return rows;
  }

  find(start: number, s: SeriesCols): number | undefined {
    return this.index.get(start)?.get(s);
  }

  /** Merge a point into its row (of `rows`, the interval starting at `start`, `ms` long), as SQLite's upsert would. */
  add(rows: Map<SeriesCols, number>, s: SeriesCols, pt: MetricPoint, start: number, ms: number): void {
    const has = pt.count > 0 && Number.isFinite(pt.min) && Number.isFinite(pt.max);
    const gauge = s.kind === MetricKind.Gauge && Number.isFinite(pt.last);
    const histogram = s.kind === MetricKind.Histogram;
    const r = rows.get(s);
    if (r === undefined) {
      const n = this.n++;
      rows.set(s, n);
      this.series.push(s);
      this.kind.push(s.kind);
      this.start.push(start);
      this.ms.push(ms);
      this.count.push(pt.count);
      this.sum.push(pt.sum);
      this.min.push(has ? pt.min : Number.NaN);
      this.max.push(has ? pt.max : Number.NaN);
      this.last.push(gauge ? pt.last : Number.NaN);
      this.sketch.push(histogram ? sketchBytesOf(pt) : null);
      if (histogram) this.histograms.push(n);
      return;
    }
    (this.count[r] as number) += pt.count;
    (this.sum[r] as number) += pt.sum;
    if (has) {
      const min = this.min[r] as number;
      const max = this.max[r] as number;
      this.min[r] = Number.isNaN(min) || pt.min < min ? pt.min : min;
      this.max[r] = Number.isNaN(max) || pt.max > max ? pt.max : max;
    }
    if (gauge) this.last[r] = pt.last;
    if (histogram) {
      const a = this.sketch[r] as Buffer | null;
      const b = sketchBytesOf(pt);
      this.sketch[r] = a === null ? b : b === null ? a : mergeSketchBytes(a, b);
    }
  }

  /** Each row's batch sketch merged with its stored one (by row). */
  mergeStored(stored: Map<number, Buffer>): void {
    for (const [r, bytes] of stored) {
      const batch = this.sketch[r] as Buffer | null;
      if (batch !== null) this.sketch[r] = mergeSketchBytes(bytes, batch);
    }
  }

  /** The keys of the histogram rows: starts, series. */
  keys(): [Buffer, Buffer] {
    const h = this.histograms;
    const starts = new Array<number>(h.length);
    const series = new Array<Buffer>(h.length);
    for (let k = 0; k < h.length; k++) {
      const r = h[k] as number;
      starts[k] = this.start[r] as number;
      series[k] = (this.series[r] as SeriesCols).key;
    }
    return [float8Array(starts), bytesArray(series)];
  }

  /** Bytes of the 13 arrays of `columns`. */
  arraysSize(): number {
    const n = this.n;
    let varying = 0;
    for (let r = 0; r < n; r++) {
      const s = this.series[r] as SeriesCols;
      const sk = this.sketch[r] as Buffer | null;
      varying += s.key.length + s.name.length + s.tags.length + (sk === null ? 0 : sk.length);
    }
    return 4 * ArrayBatch.fixedSize(n, 0) + ArrayBatch.fixedSize(n, 2) + 8 * ArrayBatch.fixedSize(n, 8) + varying;
  }

  /** The 13 binary arrays, in ARRAY_TYPES order, into `out`. */
  columns(out: ArrayBatch, now: number): Buffer[] {
    const n = this.n;
    const key = new Array<Buffer>(n);
    const name = new Array<Buffer>(n);
    const tags = new Array<Buffer>(n);
    const lastAt = new Array<number>(n);
    for (let r = 0; r < n; r++) {
      const s = this.series[r] as SeriesCols;
      key[r] = s.key;
      name[r] = s.name;
      tags[r] = s.tags;
      const last = this.last[r] as number;
      lastAt[r] = Number.isNaN(last) ? Number.NaN : now;
    }
    return [
      out.bytes(key, n),
      out.bytes(name, n, OID.text),
      out.bytes(tags, n, OID.text),
      out.int2(this.kind, n),
      out.float8(this.start, n, false),
      out.int8(this.ms, n, false),
      out.int8(this.count, n, false),
      out.float8(this.sum, n, false),
      out.float8(this.min, n, true),
      out.float8(this.max, n, true),
      out.float8(this.last, n, true),
      out.int8(lastAt, n, true),
      out.bytes(this.sketch, n),
    ];
  }
}

/** The stored sketches of one table's answer (storedSketchesSql) into `into`, by row of `rows`. */
function readSketches(b: Buffer, rows: TableRows, into: Map<number, Buffer>): void {
  for (let at = 0; at + 8 <= b.length; ) {
    const i = b.readInt32BE(at);
    const len = b.readInt32BE(at + 4);
    const row = rows.histograms[i - 1];
    if (row !== undefined) into.set(row, b.subarray(at + 8, at + 8 + len));
    at += 8 + len;
  }
}

const sketchWriter = new Writer(4096);

/** A histogram point's bucket bytes: as received when the decoder kept them, else encoded. */
function sketchBytesOf(pt: MetricPoint): Buffer | null {
  if (pt.sketchBytes !== undefined) return pt.sketchBytes;
  return pt.sketch === null ? null : encodeSketch(pt.sketch, sketchWriter);
}

export class PgMetricStore {
  /** By series key (the latin1 image of its bytes, as the decoder names it). */
  private readonly seriesCache = new Map<string, SeriesCols>();

  /**
   * `seriesCacheMax`: series whose columns are kept encoded. The cache is emptied when full
   * before a batch, never during one: a batch's rows are found by their series' entry, and
   * a second entry for a series would make it two rows of one key.
   */
  constructor(
    private readonly pool: Pool,
    private readonly rollupGraceMs: number,
    private readonly seriesCacheMax = SERIES_CACHE_MAX,
  ) {}

  /** One transaction: all the packs, or (on error) none. */
  async storeMetrics(agent: AgentRef, packs: UpMetricPack[], now: number): Promise<StoreMetricsResult> {
    if (packs.length === 0) return { stored: 0, duplicatePacks: 0, late: 0 };
    if (this.seriesCache.size >= this.seriesCacheMax) this.seriesCache.clear();
    return withAgentLock(this.pool, agent, (c) => this.storeIn(c, agent, packs, now));
  }

  /**
   * Both tables' rows of `packs` (those `use` allows). `known`: the series' entries an earlier
   * build of this batch used (the cache may have been emptied by another batch meanwhile, and
   * rows are found by the entry).
   */
  private rowsOf(packs: UpMetricPack[], use: (i: number) => boolean, known?: Map<string, SeriesCols>): [TableRows, TableRows] {
    const points = new TableRows();
    const rollups = new TableRows();
    for (let i = 0; i < packs.length; i++) {
      if (!use(i)) continue;
      const pack = packs[i] as UpMetricPack;
      const start = pack.intervalStart;
      const minute = minuteOf(start);
      const p = points.rowsAt(start);
      const m = rollups.rowsAt(minute);
      for (const pt of pack.points) {
        const s = known?.get(pt.series.key) ?? this.cols(pt.series);
        points.add(p, s, pt, start, pack.intervalMs);
        rollups.add(m, s, pt, minute, ROLLUP_MS);
      }
    }
    return [points, rollups];
  }

  private async storeIn(c: PoolClient, agent: AgentRef, packs: UpMetricPack[], now: number): Promise<StoreMetricsResult> {
    const late = packs.map((p) => isMinuteFinal(p.intervalStart, now, this.rollupGraceMs));
    // Built from every pack not late, before the new ones are known: a pack that turns out to
    // be a duplicate only costs its merge and a row read for nothing.
    const first = this.rowsOf(packs, (i) => late[i] !== true);
    const [pointStarts, pointSeries] = first[0].keys();
    const [rollupStarts, rollupSeries] = first[1].keys();
    const res = await c.query<PackOrSketchRow>({
      name: 'apm-metric-packs',
      text: PACKS_AND_SKETCHES,
      values: [agent.agentId, agent.projectId, now, textArray(packs.map((p) => p.packId)), pointStarts, pointSeries, rollupStarts, rollupSeries],
    });
    const fresh = new Set<string>();
    // The stored sketches by table, then by row of `first`.
    const stored: [Map<number, Buffer>, Map<number, Buffer>] = [new Map(), new Map()];
    const answer = res.rows;
    for (let k = 0; k < answer.length; k++) {
      const r = answer[k] as PackOrSketchRow;
      if (r.t === 0) fresh.add(r.id as string);
      else if (r.sketches !== null) readSketches(r.sketches, first[r.t - 1] as TableRows, stored[r.t - 1] as Map<number, Buffer>);
    }

    let storedPoints = 0;
    let duplicatePacks = 0;
    let latePoints = 0;
    let all = true;
    const use = packs.map((pack, i) => {
      // A pack id twice in one batch: the first is the new one, as in SQLite.
      if (!fresh.delete(pgText(pack.packId))) {
        duplicatePacks++;
        if (late[i] !== true) all = false;
        return false;
      }
      if (late[i] === true) {
        latePoints += pack.points.length;
        return false;
      }
      storedPoints += pack.points.length;
      return true;
    });
    if (storedPoints === 0) return { stored: 0, duplicatePacks, late: latePoints };

    let rows = first;
    if (!all) {
      // Some packs were stored before: their points are left out, and each stored sketch goes to its row among the rest.
      const known = new Map<string, SeriesCols>();
      for (const sc of first[1].series) known.set(sc.id, sc);
      rows = this.rowsOf(packs, (i) => use[i] === true, known);
      for (let t = 0; t < 2; t++) {
        const moved = new Map<number, Buffer>();
        const from = first[t] as TableRows;
        for (const [r, bytes] of stored[t] as Map<number, Buffer>) {
          const to = (rows[t] as TableRows).find(from.start[r] as number, from.series[r] as SeriesCols);
          if (to !== undefined) moved.set(to, bytes);
        }
        stored[t] = moved;
      }
    }
    rows[0].mergeStored(stored[0]);
    rows[1].mergeStored(stored[1]);
    // The statement's Bind message, every parameter written in place (bound-query.ts).
    const agentId = Buffer.from(agent.agentId, 'utf8');
    const projectId = Buffer.from(agent.projectId, 'utf8');
    const out = new ArrayBatch(agentId.length + projectId.length + rows[0].arraysSize() + rows[1].arraysSize(), {
      statement: UPSERT_NAME,
      params: 2 + 2 * ARRAY_TYPES.length,
    });
    out.param(agentId);
    out.param(projectId);
    rows[0].columns(out, now);
    rows[1].columns(out, now);
    await queryBound(c, UPSERT_NAME, UPSERT_BOTH, out.message());
    return { stored: storedPoints, duplicatePacks, late: latePoints };
  }

  private cols(s: Series): SeriesCols {
    let e = this.seriesCache.get(s.key);
    if (e === undefined) {
      e = {
        id: s.key,
        key: Buffer.from(s.key, 'latin1'),
        name: Buffer.from(pgText(s.name), 'utf8'),
        tags: Buffer.from(JSON.stringify(s.tags), 'utf8'),
        kind: s.kind,
      };
      this.seriesCache.set(s.key, e);
    }
    return e;
  }
}
