import type { Pool, PoolClient } from 'pg';
import type { AgentRef } from '../../types';
import type { CollectorInfo, CollectorRow, ReapResult } from '../contract';
import { inTransaction } from './tx';

/**
 * The collectors sharing a database (DESIGN §11). Each registers itself and refreshes its
 * heartbeat; any of them reaps the ones whose heartbeat stopped, and the agents whose session a
 * reaped collector held become 'disconnected' (since the reaping), their collector_id NULL.
 * Their licenses are then freed license_release_ms later by whichever collector asks (licenses.ts).
 */

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

/** Agents of the collectors in $1 (text[]) become disconnected at $2: the rows changed. */
const DISCONNECT_HELD = `
  UPDATE agents SET
    state = 'disconnected',
    state_since = CASE WHEN state = 'disconnected' THEN state_since ELSE $2 END,
    collector_id = NULL
  WHERE collector_id = ANY($1::text[])
  RETURNING project_id, agent_id`;

async function disconnectHeldBy(c: PoolClient, collectors: string[], at: number): Promise<AgentRef[]> {
  if (collectors.length === 0) return [];
  const r = await c.query<{ project_id: string; agent_id: string }>(DISCONNECT_HELD, [collectors, at]);
  return r.rows.map((row) => ({ projectId: row.project_id, agentId: row.agent_id }));
}

export class PgCollectors {
  constructor(private readonly pool: Pool) {}

  /** Register (first call) or refresh this collector's heartbeat; a heartbeat never goes back in time. */
  async heartbeat(self: CollectorInfo, at: number): Promise<void> {
    await this.pool.query({
      name: 'apm-collector-heartbeat',
      text: `INSERT INTO collectors (id, host, pid, agents_address, http_address, started_at, heartbeat_at)
        VALUES ($1, $2, $3, $4, $5, $6, $6)
        ON CONFLICT (id) DO UPDATE SET
          host = excluded.host, pid = excluded.pid, agents_address = excluded.agents_address, http_address = excluded.http_address,
          heartbeat_at = GREATEST(collectors.heartbeat_at, excluded.heartbeat_at)`,
      values: [self.id, self.host, self.pid, self.agentsAddress, self.httpAddress, at],
    });
  }

  /** Collectors whose heartbeat is older than `at - deadAfterMs` go, and the agents they held become disconnected. */
  reapCollectors(at: number, deadAfterMs: number): Promise<ReapResult> {
    return inTransaction(this.pool, async (c) => {
      const dead = await c.query<{ id: string }>('DELETE FROM collectors WHERE heartbeat_at < $1 RETURNING id', [at - deadAfterMs]);
      const collectors = dead.rows.map((r) => r.id).sort();
      return { collectors, agents: await disconnectHeldBy(c, collectors, at) };
    });
  }

  /**
   * The collector `self` starts: agents whose session belongs to no live collector (none named,
   * one gone or silent for deadAfterMs, or `self`, which holds nothing yet) become disconnected.
   * Sessions held by the other live collectors are left as they are. Returns how many rows changed.
   */
  resetSessions(self: CollectorInfo, at: number, deadAfterMs: number): Promise<number> {
    return inTransaction(this.pool, async (c) => {
      const r = await c.query(
        `UPDATE agents SET
           state = 'disconnected',
           state_since = CASE WHEN state = 'disconnected' THEN state_since ELSE $1 END,
           collector_id = NULL
         WHERE (state <> 'disconnected' OR collector_id IS NOT NULL)
           AND (collector_id IS NULL OR collector_id NOT IN (SELECT id FROM collectors WHERE heartbeat_at >= $2 AND id <> $3))`,
        [at, at - deadAfterMs, self.id],
      );
      return r.rowCount ?? 0;
    });
  }

  /** A collector stopping cleanly: its row goes, its agents become disconnected. */
  async leave(self: CollectorInfo, at: number): Promise<void> {
    await inTransaction(this.pool, async (c) => {
      await c.query('DELETE FROM collectors WHERE id = $1', [self.id]);
      await disconnectHeldBy(c, [self.id], at);
    });
  }

  async listCollectors(): Promise<CollectorRow[]> {
    const r = await this.pool.query<CollectorDbRow>(
      `SELECT c.*, (SELECT count(*) FROM agents a WHERE a.collector_id = c.id)::int AS agents FROM collectors c ORDER BY c.started_at, c.id`,
    );
    return r.rows.map((row) => ({
      id: row.id,
      host: row.host,
      pid: row.pid,
      agentsAddress: row.agents_address,
      httpAddress: row.http_address,
      startedAt: row.started_at,
      heartbeatAt: row.heartbeat_at,
      agents: row.agents,
    }));
  }
}
