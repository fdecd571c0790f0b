import type Database from 'better-sqlite3';
import type { TextItem } from '@apm-sidecar/proto/upstream';
import type { AgentRef, StoreTextResult } from '../types';

/**
 * Storing text items: traces, active stacks, events and snapshots (one row each, the item
 * kept whole as JSON beside the columns the queries filter on), and business-transaction
 * registrations (one per agent and name: a registration seen again is counted, not stored).
 */

function prepare(db: Database.Database) {
  return {
    trace: db.prepare(
      'INSERT INTO traces (project_id, agent_id, app, instance_id, txid, trace_id, name, start_time, duration_ms, error, body_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
    ),
    stack: db.prepare(
      'INSERT INTO active_stacks (project_id, agent_id, app, instance_id, txid, name, ts, elapsed_ms, body_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
    ),
    event: db.prepare('INSERT INTO events (project_id, agent_id, app, instance_id, ts, type, message, body_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?)'),
    snapshot: db.prepare('INSERT INTO snapshots (project_id, agent_id, app, instance_id, ts, kind, body_json) VALUES (?, ?, ?, ?, ?, ?, ?)'),
    bt: db.prepare('INSERT OR IGNORE INTO bt_registrations (project_id, agent_id, name, app, first_seen) VALUES (?, ?, ?, ?, ?)'),
  };
}

export class TextStore {
  private readonly st: ReturnType<typeof prepare>;
  private readonly tx: (agent: AgentRef, items: TextItem[]) => StoreTextResult;

  constructor(db: Database.Database) {
    this.st = prepare(db);
    this.tx = db.transaction((agent: AgentRef, items: TextItem[]) => this.storeIn(agent, items)).immediate;
  }

  /** One IMMEDIATE transaction: all the items, or (on error) none. */
  storeText(agent: AgentRef, items: TextItem[]): StoreTextResult {
    return this.tx(agent, items);
  }

  private storeIn(agent: AgentRef, items: TextItem[]): StoreTextResult {
    const r: StoreTextResult = { traces: 0, activeStacks: 0, events: 0, snapshots: 0, btRegistrations: 0, btDuplicates: 0 };
    const { projectId: p, agentId: id } = agent;
    for (const it of items) {
      const o = it.origin;
      switch (it.kind) {
        case 'trace': {
          const t = it.trace;
          this.st.trace.run(p, id, o.app, o.instanceId, t.txid, t.traceId, t.name, t.startTime, t.durationMs, t.error ?? null, JSON.stringify(t));
          r.traces++;
          break;
        }
        case 'activeStack': {
          const a = it.stack;
          this.st.stack.run(p, id, o.app, o.instanceId, a.txid, a.name, a.ts, a.elapsedMs, JSON.stringify(a));
          r.activeStacks++;
          break;
        }
        case 'event': {
          const e = it.event;
          this.st.event.run(p, id, o.app, o.instanceId, e.ts, e.type, e.message, JSON.stringify(e));
          r.events++;
          break;
        }
        case 'snapshot': {
          const s = it.snapshot;
          this.st.snapshot.run(p, id, o.app, o.instanceId, s.ts, s.kind, JSON.stringify(s));
          r.snapshots++;
          break;
        }
        case 'btRegistration':
          if (this.st.bt.run(p, id, it.name, o.app, it.ts).changes === 1) r.btRegistrations++;
          else r.btDuplicates++;
          break;
      }
    }
    return r;
  }
}
