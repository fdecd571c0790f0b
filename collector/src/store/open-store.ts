import { StoreUrlError } from '../errors';
import type { CollectorStore } from './contract';
import type { SqliteStoreOptions } from './index';
import { orderedByAgent } from './ordered';
import { parsePostgresUrl } from './pg/url';
import { SqliteCollectorStore } from './sqlite-store';

/**
 * `--store` (env APM_COLLECTOR_STORE): which store a command works on (DESIGN §11).
 *
 *   sqlite (or unset)          collector.db in --data-dir: one collector on one machine
 *   postgres://USER@HOST:PORT/DB   PostgreSQL, shared by every collector given the same URL
 *
 * The URL never carries a password: it is a flag, visible in the process list. The password
 * comes from PGPASSWORD or a password file (PGPASSFILE).
 */

export type StoreSpec = { kind: 'sqlite' } | { kind: 'postgres'; url: string };

export const STORE_HELP =
  'sqlite (default: collector.db in --data-dir) or postgres://USER@HOST:PORT/DB (password from PGPASSWORD or PGPASSFILE); default $APM_COLLECTOR_STORE';

/** Parse a --store value; throws StoreUrlError, whose message is fit for the command line. */
export function parseStoreSpec(value: string | undefined): StoreSpec {
  const v = (value ?? '').trim();
  if (v === '' || v === 'sqlite') return { kind: 'sqlite' };
  if (/^postgres(ql)?:\/\//i.test(v)) {
    // Checked here (no password in it, a database named, …) so a bad flag is a usage error.
    parsePostgresUrl(v);
    return { kind: 'postgres', url: v };
  }
  throw new StoreUrlError(`expected "sqlite" or a postgres://USER@HOST:PORT/DB URL, got ${JSON.stringify(v.replace(/:[^@/]*@/, ':***@').slice(0, 200))}`);
}

export interface OpenStoreOptions extends SqliteStoreOptions {
  /** PostgreSQL connections held by this collector. */
  poolSize?: number;
}

export async function openStore(spec: StoreSpec, dataDir: string, opts: OpenStoreOptions = {}): Promise<CollectorStore> {
  if (spec.kind === 'sqlite') return SqliteCollectorStore.open(dataDir, opts);
  const { PostgresStore } = await import('./pg/index.js');
  return orderedByAgent(await PostgresStore.open(spec.url, { rollupGraceMs: opts.rollupGraceMs, seenPersistMs: opts.seenPersistMs, poolSize: opts.poolSize }));
}

/** Bring the store's schema to this version: PostgreSQL's migrations, or SQLite's (applied on every open). */
export async function migrateStore(spec: StoreSpec, dataDir: string): Promise<{ from: number; to: number; location: string }> {
  if (spec.kind === 'postgres') {
    const { migratePostgres, parsePostgresUrl } = await import('./pg/index.js');
    return { ...(await migratePostgres(spec.url)), location: parsePostgresUrl(spec.url).location };
  }
  const { SqliteStore, SCHEMA_VERSION } = await import('./index.js');
  const s = SqliteStore.open(dataDir);
  const from = s.openedAtVersion;
  s.close();
  return { from, to: SCHEMA_VERSION, location: s.path };
}
