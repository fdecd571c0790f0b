import type { TextItem } from '@apm-sidecar/proto/upstream';
import type { Pool, PoolClient } from 'pg';
import type { AgentRef, StoreTextResult } from '../../types';
import { withAgentLock } from './agent-tx';
import { float8Array, textArray } from './binary-array';

/**
 * Storing text items on PostgreSQL, as the SQLite store does (../text-items.ts): traces,
 * active stacks, events and snapshots one row each (the item kept whole as JSON beside the
 * columns the queries filter on), business-transaction registrations once per agent and name
 * (one seen again is counted, not stored; the first of a batch wins, as in SQLite).
 *
 * One transaction under the agent's lock (agent-tx.ts). Each table's rows go in one prepared
 * INSERT from binary column arrays (binary-array.ts), in item order (WITH ORDINALITY), so ids
 * keep the order items came in, whatever the batch's size.
 */

type Col = 'text' | 'float8';

interface Table {
  name: string;
  /** Columns after project_id and agent_id, with their array types. */
  columns: readonly (readonly [string, Col])[];
  /** Column values, one array per column. */
  values: (string | number | null)[][];
  onConflict?: string;
}

function table(name: string, columns: readonly (readonly [string, Col])[], onConflict?: string): Table {
  return { name, columns, values: columns.map(() => []), ...(onConflict !== undefined && { onConflict }) };
}

function push(t: Table, row: (string | number | null)[]): void {
  for (let i = 0; i < row.length; i++) t.values[i]?.push(row[i] as string | number | null);
}

function insertSql(t: Table): string {
  const names = t.columns.map(([c]) => c);
  const arrays = t.columns.map(([, type], i) => `$${i + 3}::${type}[]`).join(', ');
  return `INSERT INTO ${t.name} (project_id, agent_id, ${names.join(', ')})
    SELECT $1, $2, ${names.join(', ')} FROM unnest(${arrays}) WITH ORDINALITY AS r(${names.join(', ')}, ord) ORDER BY ord${t.onConflict ?? ''}`;
}

async function insert(c: PoolClient, agent: AgentRef, t: Table): Promise<number> {
  const n = t.values[0]?.length ?? 0;
  if (n === 0) return 0;
  const arrays = t.columns.map(([, type], i) =>
    type === 'text' ? textArray(t.values[i] as (string | null)[]) : float8Array(t.values[i] as (number | null)[]),
  );
  const r = await c.query({ name: `apm-text-${t.name}`, text: insertSql(t), values: [agent.projectId, agent.agentId, ...arrays] });
  return r.rowCount ?? 0;
}

const TEXT = 'text';
const NUM = 'float8';

export class PgTextStore {
  constructor(private readonly pool: Pool) {}

  /** One transaction: all the items, or (on error) none. */
  async storeText(agent: AgentRef, items: TextItem[]): Promise<StoreTextResult> {
    const r: StoreTextResult = { traces: 0, activeStacks: 0, events: 0, snapshots: 0, btRegistrations: 0, btDuplicates: 0 };
    if (items.length === 0) return r;
    const traces = table('traces', [
      ['app', TEXT],
      ['instance_id', TEXT],
      ['txid', TEXT],
      ['trace_id', TEXT],
      ['name', TEXT],
      ['start_time', NUM],
      ['duration_ms', NUM],
      ['error', TEXT],
      ['body_json', TEXT],
    ]);
    const stacks = table('active_stacks', [
      ['app', TEXT],
      ['instance_id', TEXT],
      ['txid', TEXT],
      ['name', TEXT],
      ['ts', NUM],
      ['elapsed_ms', NUM],
      ['body_json', TEXT],
    ]);
    const events = table('events', [
      ['app', TEXT],
      ['instance_id', TEXT],
      ['ts', NUM],
      ['type', TEXT],
      ['message', TEXT],
      ['body_json', TEXT],
    ]);
    const snapshots = table('snapshots', [
      ['app', TEXT],
      ['instance_id', TEXT],
      ['ts', NUM],
      ['kind', TEXT],
      ['body_json', TEXT],
    ]);
    const bts = table(
      'bt_registrations',
      [
        ['name', TEXT],
        ['app', TEXT],
        ['first_seen', NUM],
      ],
      ' ON CONFLICT DO NOTHING',
    );
    const btRows: [string, string, number][] = [];
    for (const it of items) {
      const { app, instanceId: inst } = it.origin;
      switch (it.kind) {
        case 'trace': {
          const t = it.trace;
          push(traces, [app, inst, t.txid, t.traceId, t.name, t.startTime, t.durationMs, t.error ?? null, JSON.stringify(t)]);
          break;
        }
        case 'activeStack': {
          const a = it.stack;
          push(stacks, [app, inst, a.txid, a.name, a.ts, a.elapsedMs, JSON.stringify(a)]);
          break;
        }
        case 'event': {
          const e = it.event;
          push(events, [app, inst, e.ts, e.type, e.message, JSON.stringify(e)]);
          break;
        }
        case 'snapshot': {
          const s = it.snapshot;
          push(snapshots, [app, inst, s.ts, s.kind, JSON.stringify(s)]);
          break;
        }
        case 'btRegistration':
          btRows.push([it.name, app, it.ts]);
          break;
      }
    }
    // Registrations in name order (a stable sort: the first of a name stays first): two collectors
    // storing the same names for one agent take their row locks in one order.
    btRows.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    for (const row of btRows) push(bts, row);
    return withAgentLock(this.pool, agent, async (c) => {
      r.traces = await insert(c, agent, traces);
      r.activeStacks = await insert(c, agent, stacks);
      r.events = await insert(c, agent, events);
      r.snapshots = await insert(c, agent, snapshots);
      r.btRegistrations = await insert(c, agent, bts);
      r.btDuplicates = btRows.length - r.btRegistrations;
      return r;
    });
  }
}
