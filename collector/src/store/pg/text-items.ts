import type { TextItem } from '@apm-sidecar/proto/upstream';
import type { Pool, PoolClient } from 'pg';
import type { AgentRef, StoreTextResult } from '../../types';
import { withAgentLock } from './agent-tx';
import { pgText } from './sql-values';

/**
 * Storing text items on PostgreSQL, as the SQLite store does (../text-items.ts): traces,
 * active stacks, events and snapshots one row each (the item kept whole as JSON beside the
 * columns the queries filter on), business-transaction registrations once per agent and name
 * (one seen again is counted, not stored; the first of a batch wins, as in SQLite).
 *
 * One transaction under the agent's lock (agent-tx.ts); each table's rows go in multi-row
 * INSERTs in item order, so ids keep the order items came in.
 */

/** Rows per INSERT: 11 parameters a trace row, far below PostgreSQL's 65535 per statement. */
const ROWS_PER_INSERT = 1000;

type Value = string | number | null;

interface Table {
  sql: string;
  columns: number;
  rows: Value[][];
}

function table(name: string, columns: string[]): Table {
  return { sql: `INSERT INTO ${name} (${columns.join(', ')}) VALUES `, columns: columns.length, rows: [] };
}

/** `($1, $2, …), ($k, …)` for `rows` rows of `columns` parameters. */
function placeholders(rows: number, columns: number): string {
  const out: string[] = [];
  for (let r = 0, n = 1; r < rows; r++) {
    const ps: string[] = [];
    for (let c = 0; c < columns; c++) ps.push(`$${n++}`);
    out.push(`(${ps.join(', ')})`);
  }
  return out.join(', ');
}

async function insertAll(c: PoolClient, t: Table, tail = ''): Promise<number> {
  let inserted = 0;
  for (let i = 0; i < t.rows.length; i += ROWS_PER_INSERT) {
    const chunk = t.rows.slice(i, i + ROWS_PER_INSERT);
    const r = await c.query(`${t.sql}${placeholders(chunk.length, t.columns)}${tail}`, chunk.flat());
    inserted += r.rowCount ?? 0;
  }
  return inserted;
}

export class PgTextStore {
  constructor(private readonly pool: Pool) {}

  /** One transaction: all the items, or (on error) none. */
  async storeText(agent: AgentRef, items: TextItem[]): Promise<StoreTextResult> {
    const r: StoreTextResult = { traces: 0, activeStacks: 0, events: 0, snapshots: 0, btRegistrations: 0, btDuplicates: 0 };
    if (items.length === 0) return r;
    const { projectId: p, agentId: id } = agent;
    const traces = table('traces', [
      'project_id',
      'agent_id',
      'app',
      'instance_id',
      'txid',
      'trace_id',
      'name',
      'start_time',
      'duration_ms',
      'error',
      'body_json',
    ]);
    const stacks = table('active_stacks', ['project_id', 'agent_id', 'app', 'instance_id', 'txid', 'name', 'ts', 'elapsed_ms', 'body_json']);
    const events = table('events', ['project_id', 'agent_id', 'app', 'instance_id', 'ts', 'type', 'message', 'body_json']);
    const snapshots = table('snapshots', ['project_id', 'agent_id', 'app', 'instance_id', 'ts', 'kind', 'body_json']);
    const bts = table('bt_registrations', ['project_id', 'agent_id', 'name', 'app', 'first_seen']);
    const btNames = new Set<string>();
    let btItems = 0;
    for (const it of items) {
      const app = pgText(it.origin.app);
      const inst = pgText(it.origin.instanceId);
      switch (it.kind) {
        case 'trace': {
          const t = it.trace;
          traces.rows.push([
            p,
            id,
            app,
            inst,
            pgText(t.txid),
            pgText(t.traceId),
            pgText(t.name),
            t.startTime,
            t.durationMs,
            t.error == null ? null : pgText(t.error),
            JSON.stringify(t),
          ]);
          break;
        }
        case 'activeStack': {
          const a = it.stack;
          stacks.rows.push([p, id, app, inst, pgText(a.txid), pgText(a.name), a.ts, a.elapsedMs, JSON.stringify(a)]);
          break;
        }
        case 'event': {
          const e = it.event;
          events.rows.push([p, id, app, inst, e.ts, pgText(e.type), pgText(e.message), JSON.stringify(e)]);
          break;
        }
        case 'snapshot': {
          const s = it.snapshot;
          snapshots.rows.push([p, id, app, inst, s.ts, pgText(s.kind), JSON.stringify(s)]);
          break;
        }
        case 'btRegistration': {
          btItems++;
          const name = pgText(it.name);
          // A name twice in one batch: the first is the one stored, as in SQLite.
          if (btNames.has(name)) break;
          btNames.add(name);
          bts.rows.push([p, id, name, app, it.ts]);
          break;
        }
      }
    }
    // Registrations in name order: two collectors storing the same names for one agent take their row locks in one order.
    bts.rows.sort((a, b) => ((a[2] as string) < (b[2] as string) ? -1 : (a[2] as string) > (b[2] as string) ? 1 : 0));
    return withAgentLock(this.pool, agent, async (c) => {
      r.traces = await insertAll(c, traces);
      r.activeStacks = await insertAll(c, stacks);
      r.events = await insertAll(c, events);
      r.snapshots = await insertAll(c, snapshots);
      r.btRegistrations = await insertAll(c, bts, ' ON CONFLICT DO NOTHING');
      r.btDuplicates = btItems - r.btRegistrations;
      return r;
    });
  }
}
