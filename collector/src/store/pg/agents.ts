import type { Pool, PoolClient } from 'pg';
import type { AgentInfo } from '@apm-sidecar/proto/upstream';
import { type AgentRef, type AgentState, type AgentStateChange, type StateCause, agentKey } from '../../types';
import { type AgentDbRow as SharedRow, type AgentListRow, agentListRow } from '../agents';
import { inTransaction } from './tx';

/**
 * Agents and their liveness on PostgreSQL, as store/agents.ts keeps them in SQLite, plus the
 * collector holding each agent's session (collector_id). A change made by a session carries
 * its collector's id and applies only while that collector still holds the session, so a
 * session ended late on collector A never overwrites the newer one on collector B; becoming
 * 'disconnected' ends the hold (collector_id NULL).
 *
 * agentSeen is throttled as in SQLite: the newest time is kept in memory and written at most
 * every seenPersistMs per agent, on a state change, and on close.
 */

type AgentDbRow = SharedRow<boolean>;

// An agent that names no app keeps the apps it had.
const AGENT_INFO = `
  INSERT INTO agents (agent_id, project_id, app, apps_json, host, version, state, state_since, first_seen, last_seen, licensed)
  VALUES ($1, $2, $3, $4, $5, $6, 'disconnected', $7, $7, $7, false)
  ON CONFLICT (project_id, agent_id) DO UPDATE SET
    app = CASE WHEN excluded.app = '' THEN agents.app ELSE excluded.app END,
    apps_json = CASE WHEN excluded.app = '' THEN agents.apps_json ELSE excluded.apps_json END,
    host = excluded.host,
    version = excluded.version,
    last_seen = GREATEST(agents.last_seen, excluded.last_seen)`;

/**
 * The one writer of an agent's state: the old state of the row it changed, or no row (unknown
 * agent, already in that state, or, with a collector id, a session that collector no longer holds).
 * The row is locked first (FOR UPDATE), so the old state returned is the one replaced.
 */
const SET_STATE = `
  UPDATE agents a SET
    state = $3,
    state_since = $4,
    collector_id = CASE WHEN $3 = 'disconnected' THEN NULL ELSE a.collector_id END
  FROM (SELECT project_id, agent_id, state FROM agents WHERE project_id = $1 AND agent_id = $2 FOR UPDATE) o
  WHERE a.project_id = o.project_id AND a.agent_id = o.agent_id
    AND a.state <> $3 AND ($5::text IS NULL OR a.collector_id = $5::text)
  RETURNING o.state AS from_state`;

/** An agent that connected: live, and its session is this collector's (from whichever held it before). */
const CONNECTED = `
  UPDATE agents a SET
    state = 'live',
    state_since = CASE WHEN o.state = 'live' THEN a.state_since ELSE $3 END,
    collector_id = $4
  FROM (SELECT project_id, agent_id, state FROM agents WHERE project_id = $1 AND agent_id = $2 FOR UPDATE) o
  WHERE a.project_id = o.project_id AND a.agent_id = o.agent_id
  RETURNING o.state AS from_state`;

const SEEN = 'UPDATE agents SET last_seen = GREATEST(last_seen, $3) WHERE project_id = $1 AND agent_id = $2';

export class PgAgentStore {
  /** agentSeen: newest time per agent not yet written, and when each agent's last_seen was last written. */
  private readonly seenPending = new Map<string, { ref: AgentRef; at: number }>();
  private readonly seenWrittenAt = new Map<string, number>();

  constructor(
    private readonly pool: Pool,
    private readonly seenPersistMs: number,
  ) {}

  /** An agent completed the handshake on collector `collectorId`: its info, state 'live', its session that collector's. */
  async agentConnected(projectId: string, info: AgentInfo, at: number, collectorId: string): Promise<AgentStateChange | null> {
    return inTransaction(this.pool, (c) => this.connectedIn(c, projectId, info, at, collectorId));
  }

  /** agentConnected's writes, in the caller's transaction `c`. */
  async connectedIn(c: PoolClient, projectId: string, info: AgentInfo, at: number, collectorId: string): Promise<AgentStateChange | null> {
    await this.writeInfo(c, projectId, info, at);
    const r = await c.query<{ from_state: AgentState }>({ name: 'apm-agent-connected', text: CONNECTED, values: [projectId, info.agentId, at, collectorId] });
    this.infoWritten({ projectId, agentId: info.agentId }, at);
    const from = r.rows[0]?.from_state;
    return from === undefined || from === 'live' ? null : { from, to: 'live' };
  }

  /** Create or update the agent's row (app = its first app); a new row is 'disconnected' until a state change. */
  async agentInfo(projectId: string, info: AgentInfo, at: number): Promise<void> {
    await this.writeInfo(this.pool, projectId, info, at);
    this.infoWritten({ projectId, agentId: info.agentId }, at);
  }

  private async writeInfo(c: Pool | PoolClient, projectId: string, info: AgentInfo, at: number): Promise<void> {
    const app = info.apps[0] ?? '';
    await c.query({ name: 'apm-agent-info', text: AGENT_INFO, values: [info.agentId, projectId, app, JSON.stringify(info.apps), info.host, info.version, at] });
  }

  /** The info write carried `at` as last_seen: nothing older is pending. */
  private infoWritten(agent: AgentRef, at: number): void {
    const key = agentKey(agent);
    const pending = this.seenPending.get(key);
    if (pending !== undefined && pending.at <= at) this.seenPending.delete(key);
    this.seenWrittenAt.set(key, at);
  }

  /** The change made, or null (unknown agent, already in that state, or a session `collectorId` no longer holds). */
  async setAgentState(agent: AgentRef, to: AgentState, cause: StateCause, collectorId?: string): Promise<AgentStateChange | null> {
    // Leaving 'live' is a good moment to write the newest last_seen too.
    await this.flushSeen(agent);
    const r = await this.pool.query<{ from_state: AgentState }>({
      name: 'apm-agent-state',
      text: SET_STATE,
      values: [agent.projectId, agent.agentId, to, cause.at, collectorId ?? null],
    });
    const from = r.rows[0]?.from_state;
    return from === undefined ? null : { from, to };
  }

  /** Throttled: the newest time is always kept in memory (listAgents shows it) but written at most every seenPersistMs per agent. */
  async agentSeen(agent: AgentRef, at: number): Promise<void> {
    const key = agentKey(agent);
    const written = this.seenWrittenAt.get(key);
    if (written !== undefined && at - written < this.seenPersistMs) {
      const pending = this.seenPending.get(key);
      if (pending === undefined || at > pending.at) this.seenPending.set(key, { ref: agent, at });
      return;
    }
    this.seenPending.delete(key);
    this.seenWrittenAt.set(key, at);
    await this.pool.query({ name: 'apm-agent-seen', text: SEEN, values: [agent.projectId, agent.agentId, at] });
  }

  /** Write the pending last-seen time of `agent`, or of every agent. A failed write keeps the time pending. */
  async flushSeen(agent?: AgentRef): Promise<void> {
    const keys = agent === undefined ? [...this.seenPending.keys()] : [agentKey(agent)];
    for (const key of keys) {
      const p = this.seenPending.get(key);
      if (p === undefined) continue;
      this.seenPending.delete(key);
      try {
        await this.pool.query({ name: 'apm-agent-seen', text: SEEN, values: [p.ref.projectId, p.ref.agentId, p.at] });
        this.seenWrittenAt.set(key, p.at);
      } catch (err) {
        const newer = this.seenPending.get(key);
        if (newer === undefined || newer.at < p.at) this.seenPending.set(key, p);
        throw err;
      }
    }
  }

  /** Every agent ever seen (the API filters disconnected ones by age). app = the agent's first app. */
  async listAgents(q: { project?: string } = {}): Promise<AgentListRow[]> {
    const r =
      q.project === undefined
        ? await this.pool.query<AgentDbRow>('SELECT * FROM agents ORDER BY agent_id, project_id')
        : await this.pool.query<AgentDbRow>('SELECT * FROM agents WHERE project_id = $1 ORDER BY agent_id, project_id', [q.project]);
    return r.rows.map((row) => agentListRow(row, this.seenPending.get(agentKey({ projectId: row.project_id, agentId: row.agent_id }))?.at));
  }

  async agentsByState(): Promise<Record<AgentState, number>> {
    const out: Record<AgentState, number> = { live: 0, stalled: 0, disconnected: 0 };
    const r = await this.pool.query<{ state: string; n: number }>('SELECT state, count(*)::int AS n FROM agents GROUP BY state');
    for (const row of r.rows) if (row.state in out) out[row.state as AgentState] = row.n;
    return out;
  }
}
