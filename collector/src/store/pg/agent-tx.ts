import { createHash } from 'node:crypto';
import type { Pool, PoolClient } from 'pg';
import { type AgentRef, agentKey } from '../../types';

/**
 * One transaction holding an agent's write lock. Several collectors may store one agent's data
 * at once (a sidecar failing over while its old session is still draining); the lock makes
 * them take turns, so a sketch read, merged and written back is never overwritten by a writer
 * that read it before. Agents never wait on each other (apart from a rare hash collision).
 *
 * The lock is `pg_advisory_xact_lock(namespace, hash of (project, agent))`, released by the
 * commit or rollback. Its key is a number computed here, so BEGIN and the lock go in one
 * round trip; ROLLBACK on any error, and a client that failed mid-transaction is discarded.
 */

/** 'apmd': the first key of the data locks' two-key space (any other advisory lock uses another). */
const LOCK_NAMESPACE = 0x61706d64;

function lockKey(agent: AgentRef): number {
  return createHash('sha1').update(agentKey(agent)).digest().readInt32BE(0);
}

export async function withAgentLock<T>(pool: Pool, agent: AgentRef, work: (c: PoolClient) => Promise<T>): Promise<T> {
  const c = await pool.connect();
  let broken: Error | undefined;
  try {
    await c.query(`BEGIN; SELECT pg_advisory_xact_lock(${LOCK_NAMESPACE}, ${lockKey(agent)})`);
    const out = await work(c);
    await c.query('COMMIT');
    return out;
  } catch (err) {
    try {
      await c.query('ROLLBACK');
    } catch (e) {
      broken = e as Error;
    }
    throw err;
  } finally {
    c.release(broken);
  }
}
