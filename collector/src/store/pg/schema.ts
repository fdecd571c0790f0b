import type { ClientBase } from 'pg';
import { StoreCorruptError, StoreNotMigratedError, StoreVersionError } from '../../errors';
import { DATA_TABLES, DATA_TABLES_SQL } from './schema-data';

/**
 * The PostgreSQL schema, as migrations recorded in `schema_version` (one row per migration
 * applied): migration i (0-based) takes a database from version i to i + 1. A migration is never
 * changed once released; a change of schema is a new migration at the end.
 *
 * Only `apm-collector migrate` applies them (migratePostgres); `run` checks the version and
 * refuses a database without the schema or with another version (checkSchema), so several
 * collectors starting at once never race to change the schema under each other.
 *
 * Times are BIGINT epoch ms, blobs BYTEA, text keys COLLATE "C" (ordered by their bytes, as SQLite orders them).
 */

/** The control tables: what the collectors share besides the data (schema-data.ts). */
const CONTROL_TABLES_SQL = `
  CREATE TABLE projects (
    project_id TEXT COLLATE "C" PRIMARY KEY,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL
  );
  CREATE INDEX projects_by_name ON projects (name);

  CREATE TABLE keys (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id TEXT COLLATE "C" NOT NULL,
    secret BYTEA NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
  );
  CREATE INDEX keys_by_project ON keys (project_id);

  CREATE TABLE read_tokens (
    token_id TEXT COLLATE "C" PRIMARY KEY,
    project_id TEXT COLLATE "C",
    hash BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
  );

  -- A running collector, registered and kept alive by its heartbeat.
  CREATE TABLE collectors (
    id TEXT COLLATE "C" PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    agents_address TEXT NOT NULL,
    http_address TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
  );

  -- collector_id: the collector holding the agent's session; NULL when none (state 'disconnected').
  -- No foreign key: a collector's row goes when it is reaped, in the transaction that frees its agents.
  CREATE TABLE agents (
    project_id TEXT COLLATE "C" NOT NULL,
    agent_id TEXT COLLATE "C" NOT NULL,
    app TEXT NOT NULL,
    apps_json TEXT NOT NULL DEFAULT '[]',
    host TEXT NOT NULL,
    version TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('live', 'stalled', 'disconnected')),
    state_since BIGINT NOT NULL,
    first_seen BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    licensed BOOLEAN NOT NULL DEFAULT false,
    collector_id TEXT COLLATE "C",
    PRIMARY KEY (project_id, agent_id)
  );
  CREATE INDEX agents_by_collector ON agents (collector_id) WHERE collector_id IS NOT NULL;
  CREATE INDEX agents_licensed ON agents (state, state_since) WHERE licensed;

  -- Properties of the store, set once for every collector (the license pool's size: 'licenses').
  CREATE TABLE store_settings (
    key TEXT COLLATE "C" PRIMARY KEY,
    value TEXT NOT NULL
  );
`;

export const PG_MIGRATIONS: readonly string[] = [
  // 1: control tables and data tables.
  CONTROL_TABLES_SQL + DATA_TABLES_SQL,
];
export const PG_SCHEMA_VERSION = PG_MIGRATIONS.length;

/** Every table the migrations make: an unversioned database holding one of them is not ours to take over. */
const OUR_TABLES = ['projects', 'keys', 'read_tokens', 'collectors', 'agents', 'store_settings', ...DATA_TABLES];

/** The first key of the advisory lock migrations hold ('apmm'; other locks use other namespaces). */
const MIGRATE_LOCK = 0x61706d6d;

/** Whether a table of this name is visible in the search path. */
async function tableExists(c: ClientBase, table: string): Promise<boolean> {
  const r = await c.query<{ t: string | null }>('SELECT to_regclass($1)::text AS t', [table]);
  return r.rows[0]?.t !== null && r.rows[0]?.t !== undefined;
}

/** The schema version of the database: 0 when it has none. */
export async function schemaVersion(c: ClientBase): Promise<number> {
  if (!(await tableExists(c, 'schema_version'))) return 0;
  const r = await c.query<{ v: number | null }>('SELECT max(version) AS v FROM schema_version');
  return r.rows[0]?.v ?? 0;
}

/** For `run`: the database must be at exactly PG_SCHEMA_VERSION (StoreNotMigratedError, StoreVersionError). */
export async function checkSchema(c: ClientBase, location: string): Promise<void> {
  const v = await schemaVersion(c);
  if (v > PG_SCHEMA_VERSION) throw new StoreVersionError(location, v, PG_SCHEMA_VERSION);
  if (v < PG_SCHEMA_VERSION) throw new StoreNotMigratedError(location, v, PG_SCHEMA_VERSION);
}

/**
 * Bring the database to PG_SCHEMA_VERSION in one transaction, under an advisory lock: two
 * `migrate` at once take turns, and the second finds nothing left to do. Returns the versions
 * before and after. A newer database is refused (StoreVersionError); an unversioned one that
 * already holds tables of our names is refused (StoreCorruptError) and left untouched.
 */
export async function migrate(c: ClientBase, location: string): Promise<{ from: number; to: number }> {
  await c.query('BEGIN');
  try {
    await c.query('SELECT pg_advisory_xact_lock($1, 0)', [MIGRATE_LOCK]);
    const from = await schemaVersion(c);
    if (from > PG_SCHEMA_VERSION) throw new StoreVersionError(location, from, PG_SCHEMA_VERSION);
    if (from === 0) {
      const found: string[] = [];
      for (const t of OUR_TABLES) if (await tableExists(c, t)) found.push(t);
      if (found.length > 0) throw new StoreCorruptError(location, `it has no schema_version but holds tables named as ours: ${found.slice(0, 5).join(', ')}`);
      await c.query('CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)');
    }
    for (let v = from; v < PG_SCHEMA_VERSION; v++) {
      await c.query(PG_MIGRATIONS[v] as string);
      await c.query('INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)', [v + 1, Date.now()]);
    }
    await c.query('COMMIT');
    return { from, to: PG_SCHEMA_VERSION };
  } catch (err) {
    await c.query('ROLLBACK').catch(() => {});
    throw err;
  }
}
