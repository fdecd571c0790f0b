import type { Pool, PoolClient } from 'pg';
import type { AgentRef } from '../../types';
import type { LicenseGrant } from '../contract';
import { LICENSE_LOCK, inTransaction } from './tx';

/**
 * The one license pool of a database (DESIGN §7, §11), whichever collector an agent connects to.
 * Its size is a property of the store (store_settings 'licenses', 0 = unlimited); a license is
 * the `licensed` flag of an agent's row. Every change of the pool holds one advisory lock
 * (LICENSE_LOCK) for its transaction, so two collectors granting at once never exceed the size:
 * the second counts after the first committed.
 *
 * A license is kept while its agent is connected and for `releaseMs` after it disconnected
 * (state_since of 'disconnected'), so a brief outage or a failover keeps the seat; after that,
 * whichever collector next asks frees it.
 */

const CAPACITY_KEY = 'licenses';

/** Free the licenses of agents disconnected since `at - releaseMs` or earlier; the agents freed. */
async function releaseIn(c: PoolClient, at: number, releaseMs: number): Promise<AgentRef[]> {
  const r = await c.query<{ project_id: string; agent_id: string }>(
    `UPDATE agents SET licensed = false WHERE licensed AND state = 'disconnected' AND state_since <= $1 RETURNING project_id, agent_id`,
    [at - releaseMs],
  );
  return r.rows.map((row) => ({ projectId: row.project_id, agentId: row.agent_id })).sort((a, b) => cmp(a.projectId, b.projectId) || cmp(a.agentId, b.agentId));
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

async function capacityIn(c: Pool | PoolClient): Promise<number> {
  const r = await c.query<{ value: string }>('SELECT value FROM store_settings WHERE key = $1', [CAPACITY_KEY]);
  const v = r.rows[0]?.value;
  return v === undefined ? 0 : Number(v);
}

/** acquireLicense's work in the caller's transaction `c`, which holds LICENSE_LOCK. */
export async function acquireIn(c: PoolClient, agent: AgentRef, at: number, releaseMs: number): Promise<LicenseGrant> {
  await releaseIn(c, at, releaseMs);
  const row = await c.query<{ licensed: boolean }>('SELECT licensed FROM agents WHERE project_id = $1 AND agent_id = $2 FOR UPDATE', [
    agent.projectId,
    agent.agentId,
  ]);
  const licensed = row.rows[0]?.licensed;
  if (licensed === undefined) return { granted: false, reason: 'the agent is not registered' };
  if (licensed) return { granted: true, reason: 'license kept' };
  const capacity = await capacityIn(c);
  const held = (await c.query<{ n: number }>('SELECT count(*)::int AS n FROM agents WHERE licensed')).rows[0]?.n ?? 0;
  if (capacity > 0 && held >= capacity) return { granted: false, reason: `all ${capacity} licenses are in use` };
  await c.query('UPDATE agents SET licensed = true WHERE project_id = $1 AND agent_id = $2', [agent.projectId, agent.agentId]);
  return { granted: true, reason: capacity === 0 ? 'unlimited licenses' : `license ${held + 1} of ${capacity}` };
}

export class PgLicenses {
  constructor(private readonly pool: Pool) {}

  /** Set the pool's size (0 = unlimited; a whole number, as --licenses parses it); the size it had, or null when never set. */
  async setLicenseCapacity(capacity: number): Promise<number | null> {
    return inTransaction(
      this.pool,
      async (c) => {
        const old = await c.query<{ value: string }>('SELECT value FROM store_settings WHERE key = $1', [CAPACITY_KEY]);
        await c.query('INSERT INTO store_settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value', [
          CAPACITY_KEY,
          String(capacity),
        ]);
        const v = old.rows[0]?.value;
        return v === undefined ? null : Number(v);
      },
      LICENSE_LOCK,
    );
  }

  licenseCapacity(): Promise<number> {
    return capacityIn(this.pool);
  }

  /** Take (or keep) a license for an agent that connected, after freeing those due; one transaction under the pool's lock. */
  acquireLicense(agent: AgentRef, at: number, releaseMs: number): Promise<LicenseGrant> {
    return inTransaction(this.pool, (c) => acquireIn(c, agent, at, releaseMs), LICENSE_LOCK);
  }

  /** Free the licenses of agents disconnected for `releaseMs` or longer; returns those agents. */
  releaseLicenses(at: number, releaseMs: number): Promise<AgentRef[]> {
    return inTransaction(this.pool, (c) => releaseIn(c, at, releaseMs), LICENSE_LOCK);
  }

  /** Mark an agent (un)licensed without the pool's checks; under the pool's lock, so a grant's count is never stale. */
  async agentLicensed(agent: AgentRef, licensed: boolean): Promise<void> {
    await inTransaction(
      this.pool,
      async (c) => {
        await c.query('UPDATE agents SET licensed = $3 WHERE project_id = $1 AND agent_id = $2', [agent.projectId, agent.agentId, licensed]);
      },
      LICENSE_LOCK,
    );
  }
}
