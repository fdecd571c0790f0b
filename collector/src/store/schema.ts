import type Database from 'better-sqlite3';
import { StoreCorruptError, StoreVersionError } from '../errors';

/**
 * The schema, as migrations keyed by `PRAGMA user_version`: migration i (0-based) takes a
 * database from version i to i + 1. A migration is never changed once released (a database
 * already past it would not run it again); a change of schema is a new migration at the end.
 */

/**
 * `CREATE TABLE` as the migrations wrote it, a column per line. The text is kept in
 * sqlite_master, and the column lists below are part of released migrations: a new column
 * is a new migration (ALTER TABLE), never an edit of these lists.
 */
function createTableSql(table: string, columns: readonly string[]): string {
  return `  CREATE TABLE ${table} (\n${columns.map((c) => `    ${c}`).join(',\n')}\n  );`;
}

/** The columns of `agents` after its identity (agent_id, project_id). */
const AGENT_ROW_COLUMNS: readonly string[] = [
  'app TEXT NOT NULL',
  "apps_json TEXT NOT NULL DEFAULT '[]'",
  'host TEXT NOT NULL',
  'version TEXT NOT NULL',
  'state TEXT NOT NULL',
  'state_since INTEGER NOT NULL',
  'first_seen INTEGER NOT NULL',
  'last_seen INTEGER NOT NULL',
  'licensed INTEGER NOT NULL DEFAULT 0',
];

export const METRIC_TABLES = ['metric_points', 'metric_rollups'] as const;
export type MetricTable = (typeof METRIC_TABLES)[number];

/** Every column after the agent (and, from schema 5, project) columns, in table order. */
const SERIES_COLUMNS: readonly string[] = [
  'series_key BLOB NOT NULL',
  'name TEXT NOT NULL',
  'tags_json TEXT NOT NULL',
  'kind INTEGER NOT NULL',
  'interval_start INTEGER NOT NULL',
  'interval_ms INTEGER NOT NULL',
  'count INTEGER NOT NULL',
  'sum REAL NOT NULL',
  'min REAL',
  'max REAL',
  'last REAL',
  'last_at INTEGER',
  'sketch BLOB',
];

const AGENT_COLUMN = 'agent_id TEXT NOT NULL';
const PROJECT_COLUMN = 'project_id TEXT NOT NULL';

/** The columns of the current schema, by name, in table order. */
export const METRIC_COLUMN_NAMES: readonly string[] = [AGENT_COLUMN, PROJECT_COLUMN, ...SERIES_COLUMNS].map((c) => c.split(' ')[0] as string);

/** The columns without project_id (schemas 1 to 4), by name: what migration 3 copies. */
export const METRIC_COLUMN_NAMES_BEFORE_PROJECTS: readonly string[] = METRIC_COLUMN_NAMES.filter((c) => c !== 'project_id');

/** A metric table's `CREATE TABLE`; `withProject`: schema 5 on. */
function createMetricTableSql(table: string, withProject: boolean, primaryKey: string): string {
  return createTableSql(table, [AGENT_COLUMN, ...(withProject ? [PROJECT_COLUMN] : []), ...SERIES_COLUMNS, `PRIMARY KEY (${primaryKey})`]);
}

/** Migration 5: the project of row `t` of an agent table, from the agents row of its agent_id. */
const PROJECT_OF = `coalesce((SELECT a.project_id FROM temp.agent_project a WHERE a.agent_id = t.agent_id),
    (SELECT a.project_id FROM temp.agent_project a WHERE a.agent_id IS NULL), '')`;

export const MIGRATIONS: string[] = [
  // 1: initial schema
  `
  CREATE TABLE keys (
    project_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    secret BLOB NOT NULL,
    created_at INTEGER NOT NULL
  );
${createTableSql('agents', ['agent_id TEXT PRIMARY KEY', 'project_id TEXT NOT NULL', ...AGENT_ROW_COLUMNS])}
  CREATE TABLE metric_packs (
    agent_id TEXT NOT NULL,
    pack_id TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (agent_id, pack_id)
  ) WITHOUT ROWID;
  CREATE INDEX metric_packs_by_time ON metric_packs (received_at);
${createMetricTableSql('metric_points', false, 'agent_id, series_key, interval_start')}
  CREATE INDEX metric_points_by_name ON metric_points (name, interval_start);
  CREATE INDEX metric_points_by_start ON metric_points (interval_start);
  CREATE TABLE traces (
    id INTEGER PRIMARY KEY,
    agent_id TEXT NOT NULL,
    app TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    txid TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    name TEXT NOT NULL,
    start_time REAL NOT NULL,
    duration_ms REAL NOT NULL,
    error TEXT,
    body_json TEXT NOT NULL
  );
  CREATE INDEX traces_by_agent ON traces (agent_id, id);
  CREATE TABLE active_stacks (
    id INTEGER PRIMARY KEY,
    agent_id TEXT NOT NULL,
    app TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    txid TEXT NOT NULL,
    name TEXT NOT NULL,
    ts REAL NOT NULL,
    elapsed_ms REAL NOT NULL,
    body_json TEXT NOT NULL
  );
  CREATE INDEX active_stacks_by_agent ON active_stacks (agent_id, id);
  CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    agent_id TEXT NOT NULL,
    app TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    ts REAL NOT NULL,
    type TEXT NOT NULL,
    message TEXT NOT NULL,
    body_json TEXT NOT NULL
  );
  CREATE INDEX events_by_agent ON events (agent_id, id);
  CREATE TABLE snapshots (
    id INTEGER PRIMARY KEY,
    agent_id TEXT NOT NULL,
    app TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    body_json TEXT NOT NULL
  );
  CREATE INDEX snapshots_by_agent ON snapshots (agent_id, id);
  CREATE TABLE bt_registrations (
    agent_id TEXT NOT NULL,
    name TEXT NOT NULL,
    app TEXT NOT NULL,
    first_seen INTEGER NOT NULL,
    PRIMARY KEY (agent_id, name)
  ) WITHOUT ROWID;
  `,
  // 2: per-minute rollups, merged as points arrive; a minute is final rollup_grace_ms after it ends.
  `
${createMetricTableSql('metric_rollups', false, 'agent_id, series_key, interval_start')}
  CREATE INDEX metric_rollups_by_name ON metric_rollups (name, interval_start);
  `,
  // 3: key points and rollups by (agent, interval start, series): an interval's rows are written
  // together, on neighbouring pages, instead of one page per series (measured: about 5x less WAL
  // written per stored frame).
  ...METRIC_TABLES.map(
    (t) => `
${createMetricTableSql(`${t}_new`, false, 'agent_id, interval_start, series_key')}
  INSERT INTO ${t}_new SELECT ${METRIC_COLUMN_NAMES_BEFORE_PROJECTS.join(', ')} FROM ${t};
  DROP TABLE ${t};
  ALTER TABLE ${t}_new RENAME TO ${t};
  CREATE INDEX ${t}_by_name ON ${t} (name, interval_start);
  ${t === 'metric_points' ? 'CREATE INDEX metric_points_by_start ON metric_points (interval_start);' : ''}
  `,
  ),
  // 4: read tokens for the HTTP API; only a hash of each token is kept (a token is shown once, at creation).
  `
  CREATE TABLE read_tokens (
    token_id TEXT PRIMARY KEY,
    project_id TEXT,
    hash BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
  );
  `,
  // 5: an agent is (project, agent_id) everywhere, and a project has any number of revocable keys.
  // Existing rows are attributed to the project their agent last connected with (the agents row);
  // rows of an agent never listed go to the only project when there is exactly one, else to ''.
  `
  CREATE TABLE projects (
    project_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL
  );
  INSERT INTO projects (project_id, name, created_at) SELECT project_id, name, created_at FROM keys;
  CREATE TABLE keys_new (
    id INTEGER PRIMARY KEY,
    project_id TEXT NOT NULL,
    secret BLOB NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
  );
  INSERT INTO keys_new (project_id, secret, created_at) SELECT project_id, secret, created_at FROM keys ORDER BY created_at, project_id;
  DROP TABLE keys;
  ALTER TABLE keys_new RENAME TO keys;
  CREATE INDEX keys_by_project ON keys (project_id);

  CREATE TEMP TABLE agent_project AS
    SELECT agent_id, project_id FROM agents
    UNION ALL
    SELECT NULL, (SELECT CASE WHEN count(*) = 1 THEN max(project_id) END FROM projects);
  CREATE INDEX temp.agent_project_by_agent ON agent_project (agent_id);

  CREATE TABLE metric_packs_new (
    agent_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    pack_id TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (agent_id, project_id, pack_id)
  ) WITHOUT ROWID;
  INSERT INTO metric_packs_new SELECT t.agent_id, ${PROJECT_OF}, t.pack_id, t.received_at FROM metric_packs t;
  DROP TABLE metric_packs;
  ALTER TABLE metric_packs_new RENAME TO metric_packs;
  CREATE INDEX metric_packs_by_time ON metric_packs (received_at);

  ${METRIC_TABLES.map(
    (t) => `
${createMetricTableSql(`${t}_new`, true, 'agent_id, project_id, interval_start, series_key')}
  INSERT INTO ${t}_new SELECT t.agent_id, ${PROJECT_OF}, t.series_key, t.name, t.tags_json, t.kind, t.interval_start, t.interval_ms,
    t.count, t.sum, t.min, t.max, t.last, t.last_at, t.sketch FROM ${t} t;
  DROP TABLE ${t};
  ALTER TABLE ${t}_new RENAME TO ${t};
  CREATE INDEX ${t}_by_name ON ${t} (name, interval_start);
  ${t === 'metric_points' ? 'CREATE INDEX metric_points_by_start ON metric_points (interval_start);' : ''}`,
  ).join('\n')}

  ${['traces', 'active_stacks', 'events', 'snapshots']
    .map(
      (t) => `
  ALTER TABLE ${t} ADD COLUMN project_id TEXT NOT NULL DEFAULT '';
  UPDATE ${t} AS t SET project_id = ${PROJECT_OF};
  CREATE INDEX ${t}_by_project ON ${t} (project_id, id);`,
    )
    .join('\n')}

  CREATE TABLE bt_registrations_new (
    project_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    name TEXT NOT NULL,
    app TEXT NOT NULL,
    first_seen INTEGER NOT NULL,
    PRIMARY KEY (project_id, agent_id, name)
  ) WITHOUT ROWID;
  INSERT INTO bt_registrations_new SELECT ${PROJECT_OF}, t.agent_id, t.name, t.app, t.first_seen FROM bt_registrations t;
  DROP TABLE bt_registrations;
  ALTER TABLE bt_registrations_new RENAME TO bt_registrations;

${createTableSql('agents_new', ['project_id TEXT NOT NULL', 'agent_id TEXT NOT NULL', ...AGENT_ROW_COLUMNS, 'PRIMARY KEY (project_id, agent_id)'])}
  INSERT INTO agents_new SELECT project_id, agent_id, app, apps_json, host, version, state, state_since, first_seen, last_seen, licensed FROM agents;
  DROP TABLE agents;
  ALTER TABLE agents_new RENAME TO agents;
  DROP TABLE temp.agent_project;
  `,
  // 6: every agent's part of one distributed trace, found by its trace id (the page's correlated traces).
  `
  CREATE INDEX traces_by_trace ON traces (trace_id);
  `,
  // 7: several collectors on one store (DESIGN §11): the collector holding each agent's session,
  // the collectors and their heartbeats, and the store's own settings (the license pool's size).
  `
  ALTER TABLE agents ADD COLUMN collector_id TEXT;
  CREATE TABLE collectors (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    agents_address TEXT NOT NULL,
    http_address TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL
  ) WITHOUT ROWID;
  CREATE TABLE store_settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
  ) WITHOUT ROWID;
  `,
  // 8: pruning by age (prune.ts) finds the oldest rows of each table through an index on its time
  // column instead of scanning the table. metric_points (by_start) and metric_packs (by_time) had one.
  `
  CREATE INDEX IF NOT EXISTS metric_rollups_by_start ON metric_rollups (interval_start);
  CREATE INDEX IF NOT EXISTS traces_by_start ON traces (start_time);
  CREATE INDEX IF NOT EXISTS events_by_ts ON events (ts);
  CREATE INDEX IF NOT EXISTS snapshots_by_ts ON snapshots (ts);
  CREATE INDEX IF NOT EXISTS active_stacks_by_ts ON active_stacks (ts);
  `,
];
export const SCHEMA_VERSION = MIGRATIONS.length;

/** The tables the migrations make: an unversioned database holding any other is not ours. */
const OUR_TABLES = new Set([
  'keys',
  'projects',
  'agents',
  'metric_packs',
  'metric_points',
  'metric_rollups',
  'traces',
  'active_stacks',
  'events',
  'snapshots',
  'bt_registrations',
  'read_tokens',
  'collectors',
  'store_settings',
]);

/**
 * Bring the database to SCHEMA_VERSION, in one IMMEDIATE transaction; returns the version it had. A database newer than
 * this code is refused (StoreVersionError); an unversioned one holding tables that are not
 * ours is another program's, and is not touched (StoreCorruptError).
 */
export function migrate(db: Database.Database, path: string): number {
  const version = db.pragma('user_version', { simple: true }) as number;
  if (version > SCHEMA_VERSION) throw new StoreVersionError(path, version, SCHEMA_VERSION);
  if (version === 0) {
    const tables = db
      .prepare<[], { name: string }>("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
      .all()
      .map((r) => r.name);
    const foreign = tables.filter((t) => !OUR_TABLES.has(t));
    if (foreign.length > 0) throw new StoreCorruptError(path, `it holds tables of another program: ${foreign.slice(0, 5).join(', ')}`);
  }
  if (version === SCHEMA_VERSION) return version;
  db.transaction(() => {
    for (let v = version; v < SCHEMA_VERSION; v++) {
      db.exec(MIGRATIONS[v] as string);
      db.pragma(`user_version = ${v + 1}`);
    }
  }).immediate();
  return version;
}
