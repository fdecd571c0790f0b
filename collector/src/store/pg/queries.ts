import type { Pool } from 'pg';
import type { MetricDbRow } from '../metric-table';
import {
  type BtDbRow,
  type BtRegistrationRow,
  CONDITIONS,
  COUNTED_TABLES,
  DEFAULT_LIST_LIMIT,
  DEFAULT_QUERY_LIMIT,
  EVENT_COLUMNS,
  type EventRow,
  type Filter,
  type ListQuery,
  MAX_QUERY_LIMIT,
  type MetricQuery,
  type MetricRow,
  SNAPSHOT_COLUMNS,
  type SnapshotRow,
  TRACE_COLUMNS,
  type TraceQuery,
  type TraceRow,
  btRegistrationRow,
  clampLimit,
  eventRow,
  snapshotRow,
  toMetricRow,
  traceRow,
} from '../queries';
import { NUMERIC_INT8 } from './sql-values';

/**
 * What the API reads, from PostgreSQL: the statements of the SQLite store (../queries.ts) with
 * numbered parameters, and its row mapping, so both stores answer with the same rows in the same
 * order (text keys are COLLATE "C", ordered by their bytes as SQLite orders them). Nothing here writes.
 */

/** ` WHERE …` for the filters of `q` among `keys` (empty when none is given); their values are pushed on `values`. */
function where(q: Filter, keys: (keyof Filter)[], values: unknown[]): string {
  const parts: string[] = [];
  for (const k of keys) {
    const v = q[k];
    if (v === undefined) continue;
    values.push(v);
    parts.push(CONDITIONS[k].replace(`@${k}`, `$${values.length}`));
  }
  return parts.length > 0 ? ` WHERE ${parts.join(' AND ')}` : '';
}

export class PgQueries {
  constructor(private readonly pool: Pool) {}

  private async all<T>(text: string, values: unknown[]): Promise<T[]> {
    const r = await this.pool.query<T & Record<string, unknown>>({ text, values, types: NUMERIC_INT8 });
    return r.rows;
  }

  /** Points by project, agent, name and interval start range: the most recent `limit` of them, oldest first. */
  async queryMetrics(q: MetricQuery = {}): Promise<MetricRow[]> {
    const values: unknown[] = [];
    const table = q.rollup === true ? 'metric_rollups' : 'metric_points';
    const filter = where(q, ['project', 'agent', 'name', 'from', 'to'], values);
    values.push(clampLimit(q.limit, DEFAULT_QUERY_LIMIT));
    const text = `SELECT agent_id, project_id, name, tags_json, kind, interval_start, interval_ms, count, sum, min, max, last, sketch FROM ${table}${filter}
      ORDER BY interval_start DESC, agent_id, project_id, name, series_key LIMIT $${values.length}`;
    return (await this.all<MetricDbRow>(text, values)).reverse().map(toMetricRow);
  }

  /** The most recent rows of a text table, newest first. */
  private async list<T>(table: string, cols: string, q: ListQuery, map: (row: Record<string, unknown>) => T, filters: (keyof Filter)[] = []): Promise<T[]> {
    const values: unknown[] = [];
    const filter = where(q, ['project', 'agent', ...filters], values);
    values.push(clampLimit(q.limit, DEFAULT_LIST_LIMIT));
    const rows = await this.all<Record<string, unknown>>(`SELECT project_id, ${cols} FROM ${table}${filter} ORDER BY id DESC LIMIT $${values.length}`, values);
    return rows.map(map);
  }

  /** The most recent traces, newest first. */
  listTraces(q: TraceQuery = {}): Promise<TraceRow[]> {
    return this.list('traces', TRACE_COLUMNS, q, traceRow, ['traceId', 'name']);
  }

  /** The most recent snapshots, newest first. */
  listSnapshots(q: ListQuery = {}): Promise<SnapshotRow[]> {
    return this.list('snapshots', SNAPSHOT_COLUMNS, q, snapshotRow);
  }

  /** The most recent events, newest first. */
  listEvents(q: ListQuery = {}): Promise<EventRow[]> {
    return this.list('events', EVENT_COLUMNS, q, eventRow);
  }

  /** Registrations by agent and name (at most `limit`, default all up to MAX_QUERY_LIMIT). */
  async listBtRegistrations(q: ListQuery = {}): Promise<BtRegistrationRow[]> {
    const values: unknown[] = [];
    const filter = where(q, ['project', 'agent'], values);
    values.push(clampLimit(q.limit, MAX_QUERY_LIMIT));
    const text = `SELECT project_id, agent_id, name, app, first_seen FROM bt_registrations${filter} ORDER BY agent_id, project_id, name LIMIT $${values.length}`;
    return (await this.all<BtDbRow>(text, values)).map(btRegistrationRow);
  }

  /** Row counts of the tables SQLite's counts() reports, in one statement. */
  async counts(): Promise<Record<string, number>> {
    const text = `SELECT ${COUNTED_TABLES.map((t) => `(SELECT count(*) FROM ${t}) AS ${t}`).join(', ')}`;
    const [row] = await this.all<Record<string, number>>(text, []);
    return { ...row };
  }
}
