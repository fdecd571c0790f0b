import type Database from 'better-sqlite3';
import type { AgentInfo } from '@apm-sidecar/proto/upstream';
import type { AgentRef } from '../types';
import type { AgentStore } from './agents';
import type { AgentConnect, CollectorInfo, CollectorRow, LicenseGrant, ReapResult } from './contract';

/**
 * The collectors sharing this store and the one license pool (DESIGN §7, §11), on SQLite.
 *
 * A collector registers itself with a heartbeat; one whose heartbeat is older than the dead
 * time is removed by whichever collector reaps, and the sessions it held end. The pool's size
 * is a property of the store (`store_settings.licenses`), and a license is a flag on the
 * agent's row: taking one counts the flags in the same IMMEDIATE transaction, so two
 * collectors never hand out more than the pool holds.
 */

const LICENSES_KEY = 'licenses';

interface CollectorDbRow {
  id: string;
  host: string;
  pid: number;
  agents_address: string;
  http_address: string;
  started_at: number;
  heartbeat_at: number;
  agents: number;
}

function prepare(db: Database.Database) {
  return {
    beat: db.prepare(`
      INSERT INTO collectors (id, host, pid, agents_address, http_address, started_at, heartbeat_at)
      VALUES (@id, @host, @pid, @agentsAddress, @httpAddress, @at, @at)
      ON CONFLICT (id) DO UPDATE SET heartbeat_at = max(heartbeat_at, excluded.heartbeat_at),
        agents_address = excluded.agents_address, http_address = excluded.http_address`),
    dead: db.prepare<[number], { id: string }>('SELECT id FROM collectors WHERE heartbeat_at < ?'),
    remove: db.prepare('DELETE FROM collectors WHERE id = ?'),
    list: db.prepare<[], CollectorDbRow>(`
      SELECT c.*, (SELECT count(*) FROM agents a WHERE a.collector_id = c.id) AS agents
      FROM collectors c ORDER BY c.started_at, c.id`),
    getSetting: db.prepare<[string], { value: string }>('SELECT value FROM store_settings WHERE key = ?'),
    setSetting: db.prepare('INSERT INTO store_settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value'),
    release: db.prepare<[number], { project_id: string; agent_id: string }>(
      "UPDATE agents SET licensed = 0 WHERE licensed <> 0 AND state = 'disconnected' AND state_since <= ? RETURNING project_id, agent_id",
    ),
    licensedOf: db.prepare<[string, string], { licensed: number }>('SELECT licensed FROM agents WHERE project_id = ? AND agent_id = ?'),
    held: db.prepare<[], { n: number }>('SELECT count(*) AS n FROM agents WHERE licensed <> 0'),
    grant: db.prepare('UPDATE agents SET licensed = 1 WHERE project_id = ? AND agent_id = ?'),
  };
}

export class FleetStore {
  private readonly st: ReturnType<typeof prepare>;
  private readonly reapTx: (at: number, deadAfterMs: number) => ReapResult;
  private readonly leaveTx: (self: CollectorInfo, at: number) => void;
  private readonly acquireTx: (agent: AgentRef, at: number, releaseMs: number) => LicenseGrant;
  private readonly releaseTx: (at: number, releaseMs: number) => AgentRef[];
  private readonly connectTx: (projectId: string, info: AgentInfo, at: number, collectorId: string | null, releaseMs: number) => AgentConnect;

  constructor(
    db: Database.Database,
    private readonly agents: AgentStore,
  ) {
    this.st = prepare(db);
    this.reapTx = db.transaction((at: number, deadAfterMs: number): ReapResult => {
      const out: ReapResult = { collectors: [], agents: [] };
      for (const { id } of this.st.dead.all(at - deadAfterMs)) {
        this.st.remove.run(id);
        out.collectors.push(id);
        out.agents.push(...this.agents.endSessionsOf(id, at, `collector ${id} stopped heartbeating`));
      }
      return out;
    }).immediate;
    this.leaveTx = db.transaction((self: CollectorInfo, at: number) => {
      this.agents.endSessionsOf(self.id, at, 'collector stopped');
      this.st.remove.run(self.id);
    }).immediate;
    this.releaseTx = db.transaction((at: number, releaseMs: number) =>
      this.st.release.all(at - releaseMs).map((r) => ({ projectId: r.project_id, agentId: r.agent_id })),
    ).immediate;
    this.acquireTx = db.transaction((agent: AgentRef, at: number, releaseMs: number): LicenseGrant => {
      this.st.release.all(at - releaseMs);
      if (this.st.licensedOf.get(agent.projectId, agent.agentId)?.licensed === 1) return { granted: true, reason: 'license kept' };
      const capacity = this.licenseCapacity();
      const held = this.st.held.get()?.n ?? 0;
      if (capacity > 0 && held >= capacity) return { granted: false, reason: `all ${capacity} licenses are in use` };
      this.st.grant.run(agent.projectId, agent.agentId);
      return { granted: true, reason: capacity === 0 ? 'unlimited licenses' : `license ${held + 1} of ${capacity}` };
    }).immediate;
    // The two inner transactions become savepoints of this one: one commit.
    this.connectTx = db.transaction((projectId: string, info: AgentInfo, at: number, collectorId: string | null, releaseMs: number) => {
      const change = this.agents.agentConnected(projectId, info, at, collectorId);
      return { change, license: this.acquireTx({ projectId, agentId: info.agentId }, at, releaseMs) };
    }).immediate;
  }

  heartbeat(self: CollectorInfo, at: number): void {
    this.st.beat.run({ id: self.id, host: self.host, pid: self.pid, agentsAddress: self.agentsAddress, httpAddress: self.httpAddress, at });
  }

  reapCollectors(at: number, deadAfterMs: number): ReapResult {
    return this.reapTx(at, deadAfterMs);
  }

  leave(self: CollectorInfo, at: number): void {
    this.leaveTx(self, at);
  }

  listCollectors(): CollectorRow[] {
    return this.st.list.all().map((r) => ({
      id: r.id,
      host: r.host,
      pid: r.pid,
      agentsAddress: r.agents_address,
      httpAddress: r.http_address,
      startedAt: r.started_at,
      heartbeatAt: r.heartbeat_at,
      agents: r.agents,
    }));
  }

  /** The pool's size, 0 (unlimited) until set. */
  licenseCapacity(): number {
    const v = this.st.getSetting.get(LICENSES_KEY)?.value;
    return v === undefined ? 0 : Number(v);
  }

  setLicenseCapacity(capacity: number): number | null {
    const old = this.st.getSetting.get(LICENSES_KEY)?.value;
    this.st.setSetting.run(LICENSES_KEY, String(capacity));
    return old === undefined ? null : Number(old);
  }

  acquireLicense(agent: AgentRef, at: number, releaseMs: number): LicenseGrant {
    return this.acquireTx(agent, at, releaseMs);
  }

  /** agentConnected and acquireLicense in one IMMEDIATE transaction. */
  connectAgent(projectId: string, info: AgentInfo, at: number, collectorId: string | null, releaseMs: number): AgentConnect {
    return this.connectTx(projectId, info, at, collectorId, releaseMs);
  }

  releaseLicenses(at: number, releaseMs: number): AgentRef[] {
    return this.releaseTx(at, releaseMs);
  }
}
