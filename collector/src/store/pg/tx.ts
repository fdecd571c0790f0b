import type { Pool, PoolClient } from 'pg';

/**
 * One transaction on a client of the pool: committed before it resolves, rolled back on any
 * error. With `lock`, it first takes the advisory transaction lock (namespace, key), released by
 * the commit or rollback: the writers of one thing (the license pool, new projects) take turns
 * across every collector on the database. A client whose rollback failed (its connection
 * dropped) is discarded rather than returned to the pool.
 */
export async function inTransaction<T>(pool: Pool, work: (c: PoolClient) => Promise<T>, lock?: readonly [namespace: number, key: number]): Promise<T> {
  const c = await pool.connect();
  let broken: Error | undefined;
  try {
    await c.query(lock === undefined ? 'BEGIN' : `BEGIN; SELECT pg_advisory_xact_lock(${lock[0] | 0}, ${lock[1] | 0})`);
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

/** Advisory lock namespaces of the control side ('apml' licenses, 'apmk' keys); the data side uses 'apmd', migrations 'apmm'. */
export const LICENSE_LOCK = [0x61706d6c, 0] as const;
export const KEY_LOCK = [0x61706d6b, 0] as const;
