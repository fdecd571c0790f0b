import { userInfo } from 'node:os';
import { type ClientConfig, Pool } from 'pg';
import { StoreAuthError, StoreUnavailableError } from '../../errors';
import { passwordFor } from './passfile';
import { NUMERIC_INT8 } from './sql-values';
import type { PgTarget } from './url';

/**
 * The connection pool of a PostgreSQL store, and what its failures mean for people.
 *
 * The password is never in the URL (url.ts): it is PGPASSWORD, else the password file
 * (PGPASSFILE, ~/.pgpass), read by passfile.ts when the server asks for a password. A connection that drops (the server restarts, a network cut) must
 * never crash the collector: every client of the pool, idle or checked out, has an 'error'
 * listener, and the query it was running rejects, so the write it carried is not acked.
 */

/** Connection settings of `t` (the password asked for when the server wants one: passfile.ts). */
export function connectionConfig(t: PgTarget, applicationName: string, connectTimeoutMs = 10_000): ClientConfig {
  const user = t.user ?? process.env.PGUSER ?? userInfo().username;
  return {
    host: t.host,
    port: t.port,
    user,
    password: async () => passwordFor(t, user),
    database: t.database,
    ssl: t.ssl === 'disable' ? false : { rejectUnauthorized: t.ssl === 'verify-full' },
    application_name: applicationName,
    types: NUMERIC_INT8,
    connectionTimeoutMillis: connectTimeoutMs,
  };
}

export function createPool(t: PgTarget, o: { max: number; connectTimeoutMs?: number }, onError: (err: Error) => void): Pool {
  const pool = new Pool({ ...connectionConfig(t, 'apm-collector', o.connectTimeoutMs), max: o.max, idleTimeoutMillis: 30_000 });
  pool.on('error', onError);
  pool.on('connect', (client) => client.on('error', onError));
  return pool;
}

const UNREACHABLE = new Set(['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOENT', 'EPIPE']);
/** SQLSTATEs: the server is there but takes no session now (starting, shutting down, full), or has no such database. */
const UNAVAILABLE_STATES = new Set(['57P01', '57P02', '57P03', '53300', '3D000', '08001', '08006']);
const AUTH_STATES = new Set(['28P01', '28000']);

/** A connection failure as the store's typed error (StoreUnavailableError, StoreAuthError); other errors as they are. */
export function storeError(t: PgTarget, err: unknown): unknown {
  if (!(err instanceof Error) || err instanceof StoreAuthError) return err;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && AUTH_STATES.has(code)) return new StoreAuthError(t.location, err.message);
  // The pg client's own words when no password was found (neither PGPASSWORD nor a password file).
  if (/client password must be a string|password must be a string/i.test(err.message)) {
    return new StoreAuthError(t.location, 'no password was given (set PGPASSWORD, or PGPASSFILE to a password file)');
  }
  if (typeof code === 'string' && (UNREACHABLE.has(code) || UNAVAILABLE_STATES.has(code))) return new StoreUnavailableError(t.location, t.server, err.message);
  // pg's words for a server that did not answer within the connect timeout, or hung up.
  if (/connection timeout|Connection terminated|timeout exceeded when trying to connect|^timeout expired$/i.test(err.message))
    return new StoreUnavailableError(t.location, t.server, err.message);
  return err;
}
