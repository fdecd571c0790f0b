import type Database from 'better-sqlite3';
import type { AgentInfo } from '@apm-sidecar/proto/upstream';
import { type AgentRef, type AgentRow, type AgentState, type AgentStateChange, type StateCause, agentKey } from '../types';

/**
 * Agents and their liveness (DESIGN §7), one row per (project, agent_id).
 *
 * An agent's state ('live' | 'stalled' | 'disconnected') and the time it took it are
 * written in one place only, setAgentState; a row is created 'disconnected' and made
 * 'live' by it like any other change. Liveness is not worth an fsync per frame: agentSeen
 * is throttled (seenPersistMs), keeps the newest time in memory meanwhile, and writes it on
 * a state change and on close.
 */

/** Agent rows as listed for the API: AgentRow plus what the store knows besides. */
export interface AgentListRow extends AgentRow {
  apps: string[];
  version: string;
  firstSeenAt: number;
  /** When the state last changed (epoch ms). */
  stateSince: number;
}

/** An agents row as both stores read it; `licensed` is 0/1 in SQLite, a boolean in PostgreSQL. */
export interface AgentDbRow<L = number> {
  agent_id: string;
  project_id: string;
  app: string;
  apps_json: string;
  host: string;
  version: string;
  state: string;
  state_since: number;
  first_seen: number;
  last_seen: number;
  licensed: L;
}

/** A row as the API lists it; `pendingSeen` is a newer last-seen time not written yet (agentSeen is throttled). */
export function agentListRow(r: AgentDbRow<number | boolean>, pendingSeen: number | undefined): AgentListRow {
  return {
    agentId: r.agent_id,
    projectId: r.project_id,
    app: r.app,
    apps: parseApps(r.apps_json),
    host: r.host,
    version: r.version,
    state: r.state as AgentState,
    stateSince: r.state_since,
    firstSeenAt: r.first_seen,
    lastSeenAt: pendingSeen !== undefined && pendingSeen > r.last_seen ? pendingSeen : r.last_seen,
    licensed: r.licensed === 1 || r.licensed === true,
  };
}

function prepare(db: Database.Database) {
  return {
    // An agent that names no app keeps the apps it had.
    agentInfo: db.prepare(`
      INSERT INTO agents (agent_id, project_id, app, apps_json, host, version, state, state_since, first_seen, last_seen, licensed)
      VALUES (@agentId, @projectId, @app, @appsJson, @host, @version, 'disconnected', @at, @at, @at, 0)
      ON CONFLICT (project_id, agent_id) DO UPDATE SET
        app = CASE WHEN excluded.app = '' THEN app ELSE excluded.app END,
        apps_json = CASE WHEN excluded.app = '' THEN apps_json ELSE excluded.apps_json END,
        host = excluded.host,
        version = excluded.version,
        last_seen = max(last_seen, excluded.last_seen)`),
    stateOf: db.prepare<[string, string], { state: string }>('SELECT state FROM agents WHERE project_id = ? AND agent_id = ?'),
    setState: db.prepare('UPDATE agents SET state = ?, state_since = ? WHERE project_id = ? AND agent_id = ?'),
    ownerOf: db.prepare<[string, string], { collector_id: string | null }>('SELECT collector_id FROM agents WHERE project_id = ? AND agent_id = ?'),
    setOwner: db.prepare('UPDATE agents SET collector_id = ? WHERE project_id = ? AND agent_id = ?'),
    agentSeen: db.prepare('UPDATE agents SET last_seen = max(last_seen, ?) WHERE project_id = ? AND agent_id = ?'),
    agentLicensed: db.prepare('UPDATE agents SET licensed = ? WHERE project_id = ? AND agent_id = ?'),
    // Sessions no live collector holds: none, or one of a collector whose row is gone or other than `self`'s.
    // Sessions no live collector holds: none, or one of a collector other than `self` whose heartbeat is older than `live`.
    orphans: db.prepare<[{ self: string; live: number }], { project_id: string; agent_id: string }>(
      `SELECT project_id, agent_id FROM agents a
       WHERE (a.state <> 'disconnected' OR a.collector_id IS NOT NULL)
         AND (a.collector_id IS NULL OR (a.collector_id <> @self
           AND NOT EXISTS (SELECT 1 FROM collectors c WHERE c.id = a.collector_id AND c.heartbeat_at >= @live)))`,
    ),
    byCollector: db.prepare<[string], { project_id: string; agent_id: string }>('SELECT project_id, agent_id FROM agents WHERE collector_id = ?'),
    listAgents: db.prepare<[], AgentDbRow>('SELECT * FROM agents ORDER BY agent_id, project_id'),
    agentsByState: db.prepare<[], { state: string; n: number }>('SELECT state, count(*) AS n FROM agents GROUP BY state'),
  };
}

function parseApps(json: string): string[] {
  try {
    const parsed: unknown = JSON.parse(json);
    return Array.isArray(parsed) ? parsed.filter((a): a is string => typeof a === 'string') : [];
  } catch {
    return [];
  }
}

export class AgentStore {
  private readonly st: ReturnType<typeof prepare>;
  /** agentSeen: newest time per agent not yet written, and when each agent's last_seen was last written. */
  private readonly seenPending = new Map<string, { ref: AgentRef; at: number }>();
  private readonly seenWrittenAt = new Map<string, number>();
  private readonly connectedTx: (projectId: string, info: AgentInfo, at: number, collectorId: string | null) => AgentStateChange | null;
  private readonly stateTx: (agent: AgentRef, to: AgentState, cause: StateCause, collectorId: string | undefined) => AgentStateChange | null;
  private readonly resetTx: (rows: { project_id: string; agent_id: string }[], at: number, reason: string) => number;

  constructor(
    db: Database.Database,
    private readonly seenPersistMs: number,
  ) {
    this.st = prepare(db);
    this.connectedTx = db.transaction((projectId: string, info: AgentInfo, at: number, collectorId: string | null) => {
      this.agentInfo(projectId, info, at);
      const change = this.stateTx({ projectId, agentId: info.agentId }, 'live', { at, reason: 'connected' }, undefined);
      this.st.setOwner.run(collectorId, projectId, info.agentId);
      return change;
    }).immediate;
    this.stateTx = db.transaction((agent: AgentRef, to: AgentState, cause: StateCause, collectorId: string | undefined) =>
      this.setStateIn(agent, to, cause, collectorId),
    ).immediate;
    this.resetTx = db.transaction((rows: { project_id: string; agent_id: string }[], at: number, reason: string) => {
      for (const r of rows) this.stateTx({ projectId: r.project_id, agentId: r.agent_id }, 'disconnected', { at, reason }, undefined);
      return rows.length;
    }).immediate;
  }

  /** An agent completed the handshake (on collector `collectorId`, which now holds its session): its info, and state 'live'. */
  agentConnected(projectId: string, info: AgentInfo, at: number, collectorId: string | null = null): AgentStateChange | null {
    return this.connectedTx(projectId, info, at, collectorId);
  }

  /** Create or update the agent's row (app = its first app); a new row is 'disconnected' until setAgentState. */
  agentInfo(projectId: string, info: AgentInfo, at: number): void {
    const app = info.apps[0] ?? '';
    this.st.agentInfo.run({ agentId: info.agentId, projectId, app, appsJson: JSON.stringify(info.apps), host: info.host, version: info.version, at });
    const key = agentKey({ projectId, agentId: info.agentId });
    this.seenPending.delete(key);
    this.seenWrittenAt.set(key, at);
  }

  /**
   * The one writer of an agent's state: the change made, or null (unknown agent, already in that
   * state, or — with `collectorId` — a session that collector no longer holds). 'disconnected'
   * also ends the hold of whichever collector had the session.
   */
  setAgentState(agent: AgentRef, to: AgentState, cause: StateCause, collectorId?: string): AgentStateChange | null {
    return this.stateTx(agent, to, cause, collectorId);
  }

  private setStateIn(agent: AgentRef, to: AgentState, cause: StateCause, collectorId: string | undefined): AgentStateChange | null {
    if (collectorId !== undefined && this.st.ownerOf.get(agent.projectId, agent.agentId)?.collector_id !== collectorId) return null;
    // Leaving 'live' is a good moment to write the newest last_seen too.
    this.flushSeen(agent);
    const row = this.st.stateOf.get(agent.projectId, agent.agentId);
    if (row === undefined) return null;
    if (to === 'disconnected') this.st.setOwner.run(null, agent.projectId, agent.agentId);
    if (row.state === to) return null;
    this.st.setState.run(to, cause.at, agent.projectId, agent.agentId);
    return { from: row.state as AgentState, to };
  }

  /** Throttled: the newest time is always kept in memory (listAgents shows it) but written at most every seenPersistMs per agent. */
  agentSeen(agent: AgentRef, at: number): void {
    const key = agentKey(agent);
    const written = this.seenWrittenAt.get(key);
    if (written !== undefined && at - written < this.seenPersistMs) {
      const pending = this.seenPending.get(key);
      if (pending === undefined || at > pending.at) this.seenPending.set(key, { ref: agent, at });
      return;
    }
    this.seenPending.delete(key);
    this.seenWrittenAt.set(key, at);
    this.st.agentSeen.run(at, agent.projectId, agent.agentId);
  }

  /** Write the pending last-seen time of `agent`, or of every agent. */
  flushSeen(agent?: AgentRef): void {
    const keys = agent === undefined ? [...this.seenPending.keys()] : [agentKey(agent)];
    for (const key of keys) {
      const p = this.seenPending.get(key);
      if (p === undefined) continue;
      this.seenPending.delete(key);
      this.seenWrittenAt.set(key, p.at);
      this.st.agentSeen.run(p.at, p.ref.projectId, p.ref.agentId);
    }
  }

  agentLicensed(agent: AgentRef, licensed: boolean): void {
    this.st.agentLicensed.run(licensed ? 1 : 0, agent.projectId, agent.agentId);
  }

  /**
   * Agents whose session no live collector holds become disconnected (since `at`): `self` is the
   * collector starting, and another is live while its heartbeat is younger than `deadAfterMs`
   * (one killed a moment ago is reaped once it is older). Licenses stay with their agents until
   * released (license_release_ms after the disconnection), so a restart does not hand a seat to
   * someone else. Returns how many agents changed.
   */
  resetSessions(self: string, at: number, deadAfterMs = 0): number {
    return this.resetTx(this.st.orphans.all({ self, live: at - deadAfterMs }), at, 'collector restarted');
  }

  /** The agents whose session collector `id` holds become disconnected (it stopped, or stopped heartbeating). */
  endSessionsOf(id: string, at: number, reason: string): AgentRef[] {
    const rows = this.st.byCollector.all(id);
    this.resetTx(rows, at, reason);
    return rows.map((r) => ({ projectId: r.project_id, agentId: r.agent_id }));
  }

  /** Every agent ever seen (the API filters disconnected ones by age). app = the agent's first app. */
  listAgents(q: { project?: string } = {}): AgentListRow[] {
    const rows = this.st.listAgents.all().filter((r) => q.project === undefined || r.project_id === q.project);
    return rows.map((r) => agentListRow(r, this.seenPending.get(agentKey({ projectId: r.project_id, agentId: r.agent_id }))?.at));
  }

  agentsByState(): Record<AgentState, number> {
    const out: Record<AgentState, number> = { live: 0, stalled: 0, disconnected: 0 };
    for (const r of this.st.agentsByState.all()) if (r.state in out) out[r.state as AgentState] = r.n;
    return out;
  }
}
