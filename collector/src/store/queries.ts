import type Database from 'better-sqlite3';
import { METRIC_KIND_NAMES, MetricKind, type MetricKindName } from '@apm-sidecar/proto';
import { type MetricDbRow, decodeSketch } from './metric-table';

/** What the API reads: metric points and rollups, traces, events, registrations. Nothing here writes. */

export const MAX_QUERY_LIMIT = 10_000;
export const DEFAULT_QUERY_LIMIT = 1000;
export const DEFAULT_LIST_LIMIT = 100;

export interface MetricQuery {
  /** Only this project's agents. */
  project?: string;
  agent?: string;
  name?: string;
  /** Interval start ≥ from (epoch ms). */
  from?: number;
  /** Interval start < to (epoch ms). */
  to?: number;
  /** At most this many points: the most recent ones in the range (default 1000, at most MAX_QUERY_LIMIT). */
  limit?: number;
  /** Per-minute rollups instead of reporting-interval points. */
  rollup?: boolean;
}

export interface ListQuery {
  project?: string;
  agent?: string;
  limit?: number;
}

/** The trace list's filters: one trace id (every agent's part of one distributed trace), one transaction name. */
export interface TraceQuery extends ListQuery {
  traceId?: string;
  name?: string;
}

export interface SnapshotRow {
  project: string;
  agentId: string;
  app: string;
  instanceId: string;
  ts: number;
  kind: string;
  data: unknown;
}

export interface MetricRow {
  project: string;
  agentId: string;
  name: string;
  tags: Record<string, string>;
  kind: MetricKindName;
  /** Interval start, epoch ms. */
  ts: number;
  intervalMs: number;
  count: number;
  sum: number;
  /** null when count is 0. */
  min: number | null;
  max: number | null;
  /** Gauges only: the last value set. */
  value?: number | null;
  /** Histograms only (from the stored sketch, within 1%); null for counters and gauges. */
  p50: number | null;
  p95: number | null;
  p99: number | null;
}

export interface TraceRow {
  project: string;
  agentId: string;
  app: string;
  instanceId: string;
  txid: string;
  traceId: string;
  name: string;
  startTime: number;
  durationMs: number;
  error: string | null;
  trace: unknown;
}

export interface EventRow {
  project: string;
  agentId: string;
  app: string;
  instanceId: string;
  ts: number;
  type: string;
  message: string;
  event: unknown;
}

export interface BtRegistrationRow {
  project: string;
  agentId: string;
  name: string;
  app: string;
  firstSeenAt: number;
}

export type Filter = Pick<MetricQuery, 'project' | 'agent' | 'name' | 'from' | 'to'> & { traceId?: string };

/** Each filter a query may give, and its condition on the named parameter (`@key`; pg/queries.ts numbers them). */
export const CONDITIONS: Record<keyof Filter, string> = {
  project: 'project_id = @project',
  agent: 'agent_id = @agent',
  name: 'name = @name',
  from: 'interval_start >= @from',
  to: 'interval_start < @to',
  traceId: 'trace_id = @traceId',
};

/** ` WHERE …` for the filters of `q` among `keys` (empty when none is given); their values go into `params`. */
function where(q: Filter, keys: (keyof Filter)[], params: Record<string, unknown>): string {
  const parts: string[] = [];
  for (const k of keys) {
    const v = q[k];
    if (v === undefined) continue;
    parts.push(CONDITIONS[k]);
    params[k] = v;
  }
  return parts.length > 0 ? ` WHERE ${parts.join(' AND ')}` : '';
}

export function clampLimit(limit: number | undefined, dflt: number): number {
  return Math.max(1, Math.min(MAX_QUERY_LIMIT, Math.floor(limit ?? dflt)));
}

function finiteOrNull(v: number): number | null {
  return Number.isFinite(v) ? v : null;
}

export function toMetricRow(r: MetricDbRow): MetricRow {
  const row: MetricRow = {
    project: r.project_id,
    agentId: r.agent_id,
    name: r.name,
    tags: JSON.parse(r.tags_json) as Record<string, string>,
    kind: METRIC_KIND_NAMES[r.kind] ?? 'counter',
    ts: r.interval_start,
    intervalMs: r.interval_ms,
    count: r.count,
    sum: r.sum,
    min: r.min,
    max: r.max,
    p50: null,
    p95: null,
    p99: null,
  };
  if (r.kind === MetricKind.Gauge) row.value = r.last;
  if (r.kind === MetricKind.Histogram && r.sketch !== null && r.count > 0) {
    const s = decodeSketch(r.sketch);
    // quantile() walks bucket counts; count/min/max bound and clamp it.
    s.count = r.count;
    s.sum = r.sum;
    if (r.min !== null) s.min = r.min;
    if (r.max !== null) s.max = r.max;
    row.p50 = finiteOrNull(s.quantile(0.5));
    row.p95 = finiteOrNull(s.quantile(0.95));
    row.p99 = finiteOrNull(s.quantile(0.99));
  }
  return row;
}

/** Where a text item came from: the columns every text table starts with (with project_id). */
const ORIGIN_COLUMNS = 'agent_id, app, instance_id';

export function origin(r: Record<string, unknown>): { project: string; agentId: string; app: string; instanceId: string } {
  return { project: r.project_id as string, agentId: r.agent_id as string, app: r.app as string, instanceId: r.instance_id as string };
}

/** The columns each list reads after project_id, and how its rows map to API rows (shared with pg/queries.ts). */
export const TRACE_COLUMNS = `${ORIGIN_COLUMNS}, txid, trace_id, name, start_time, duration_ms, error, body_json`;
export const SNAPSHOT_COLUMNS = `${ORIGIN_COLUMNS}, ts, kind, body_json`;
export const EVENT_COLUMNS = `${ORIGIN_COLUMNS}, ts, type, message, body_json`;
/** Every table counts() reports. */
export const COUNTED_TABLES = [
  'agents',
  'projects',
  'keys',
  'metric_packs',
  'metric_points',
  'traces',
  'active_stacks',
  'events',
  'snapshots',
  'bt_registrations',
];

export function traceRow(r: Record<string, unknown>): TraceRow {
  return {
    ...origin(r),
    txid: r.txid as string,
    traceId: r.trace_id as string,
    name: r.name as string,
    startTime: r.start_time as number,
    durationMs: r.duration_ms as number,
    error: (r.error as string | null) ?? null,
    trace: JSON.parse(r.body_json as string) as unknown,
  };
}

export function snapshotRow(r: Record<string, unknown>): SnapshotRow {
  return {
    ...origin(r),
    ts: r.ts as number,
    kind: r.kind as string,
    // The stored body is the whole snapshot pack; its `data` is what the app gave.
    data: (JSON.parse(r.body_json as string) as { data?: unknown }).data ?? null,
  };
}

export function eventRow(r: Record<string, unknown>): EventRow {
  return {
    ...origin(r),
    ts: r.ts as number,
    type: r.type as string,
    message: r.message as string,
    event: JSON.parse(r.body_json as string) as unknown,
  };
}

export interface BtDbRow {
  project_id: string;
  agent_id: string;
  name: string;
  app: string;
  first_seen: number;
}

export function btRegistrationRow(r: BtDbRow): BtRegistrationRow {
  return { project: r.project_id, agentId: r.agent_id, name: r.name, app: r.app, firstSeenAt: r.first_seen };
}

export class Queries {
  /** Statements by SQL text: a query's text depends only on which filters it gives, so there are few. */
  private readonly cache = new Map<string, Database.Statement>();

  constructor(private readonly db: Database.Database) {}

  private all<T>(sql: string, params: Record<string, unknown>): T[] {
    let stmt = this.cache.get(sql);
    if (stmt === undefined) {
      stmt = this.db.prepare(sql);
      this.cache.set(sql, stmt);
    }
    return stmt.all(params) as T[];
  }

  /** Points by project, agent, name and interval start range: the most recent `limit` of them, oldest first. */
  queryMetrics(q: MetricQuery = {}): MetricRow[] {
    const params: Record<string, unknown> = { limit: clampLimit(q.limit, DEFAULT_QUERY_LIMIT) };
    const table = q.rollup === true ? 'metric_rollups' : 'metric_points';
    const sql = `SELECT agent_id, project_id, name, tags_json, kind, interval_start, interval_ms, count, sum, min, max, last, sketch FROM ${table}${where(
      q,
      ['project', 'agent', 'name', 'from', 'to'],
      params,
    )} ORDER BY interval_start DESC, agent_id, project_id, name, series_key LIMIT @limit`;
    return this.all<MetricDbRow>(sql, params).reverse().map(toMetricRow);
  }

  /** The most recent rows of a text table, newest first. */
  private list<T>(table: string, cols: string, q: ListQuery, map: (row: Record<string, unknown>) => T, filters: (keyof Filter)[] = []): T[] {
    const params: Record<string, unknown> = { limit: clampLimit(q.limit, DEFAULT_LIST_LIMIT) };
    const sql = `SELECT project_id, ${cols} FROM ${table}${where(q, ['project', 'agent', ...filters], params)} ORDER BY id DESC LIMIT @limit`;
    return this.all<Record<string, unknown>>(sql, params).map(map);
  }

  /** The most recent traces, newest first. */
  listTraces(q: TraceQuery = {}): TraceRow[] {
    return this.list('traces', TRACE_COLUMNS, q, traceRow, ['traceId', 'name']);
  }

  /** The most recent snapshots, newest first. */
  listSnapshots(q: ListQuery = {}): SnapshotRow[] {
    return this.list('snapshots', SNAPSHOT_COLUMNS, q, snapshotRow);
  }

  /** The most recent events, newest first. */
  listEvents(q: ListQuery = {}): EventRow[] {
    return this.list('events', EVENT_COLUMNS, q, eventRow);
  }

  /** Registrations by agent and name (at most `limit`, default all up to MAX_QUERY_LIMIT). */
  listBtRegistrations(q: ListQuery = {}): BtRegistrationRow[] {
    const params: Record<string, unknown> = { limit: clampLimit(q.limit, MAX_QUERY_LIMIT) };
    const sql = `SELECT project_id, agent_id, name, app, first_seen FROM bt_registrations${where(q, ['project', 'agent'], params)} ORDER BY agent_id, project_id, name LIMIT @limit`;
    return this.all<BtDbRow>(sql, params).map(btRegistrationRow);
  }

  /** Row counts of the data tables (for status output and tests). */
  counts(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const t of COUNTED_TABLES) {
      out[t] = (this.db.prepare(`SELECT count(*) AS n FROM ${t}`).get() as { n: number }).n;
    }
    return out;
  }
}
