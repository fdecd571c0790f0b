import { randomBytes } from 'node:crypto';
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, readSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import Database from 'better-sqlite3';
import { METRIC_KIND_NAMES, MetricKind, type MetricKindName, type MetricPoint, Reader, type Series, Sketch, Writer } from '@apm-sidecar/proto';
import { type AccessKey, type AgentInfo, type TextItem, type UpMetricPack, isProjectId, keyFingerprint } from '@apm-sidecar/proto/upstream';
import { ReadTokens } from './read-tokens';
import { DataDirModeError, KeyNotFoundError, ProjectNameError, StoreCorruptError, StoreDurabilityError, StoreOpenError, StoreVersionError } from './errors';
import {
  type AgentRef,
  type AgentRow,
  type AgentState,
  type CollectorStore,
  type ProjectKey,
  type StoreMetricsResult,
  type StoreTextResult,
  agentKey,
} from './types';

/**
 * The collector's SQLite storage (one file, `<dataDir>/collector.db`).
 *
 * Durability: WAL with synchronous = FULL, set explicitly and read back (the
 * bundled SQLite may default WAL to NORMAL, which can lose the last commits on
 * power loss — and the collector acks what it has committed). Every write
 * method is one IMMEDIATE transaction, committed before it returns, so an ack
 * sent after it never covers data that could be lost. (agentSeen is the one
 * exception: it is throttled, see below.)
 *
 * An agent is (project, agent_id) in every table: the same agent_id under two
 * projects is two agents, with their own rows, packs, points and items.
 *
 * Exactly-once metrics: a pack id is unique per agent and stable across
 * resends; `metric_packs` remembers every pack stored, and a pack seen again is
 * skipped. Points merge into (agent, series bytes, interval start):
 *
 *   count, sum  added          min, max  min/max          gauge last  the most recently received
 *   sketch      bucket counts added (Sketch.merge), stored as Sketch.encodeBuckets bytes
 *
 * Access keys: a project (`projects`) has any number of keys (`keys`), each
 * valid until revoked; the handshake tries the project's keys, sessions remember
 * the key's id, and running collectors poll the revoked ids.
 *
 * Schema changes are migrations keyed by `PRAGMA user_version`.
 */

export const DB_FILE = 'collector.db';

/** Agent rows as listed for the API: AgentRow plus what the store knows besides. */
export interface AgentListRow extends AgentRow {
  apps: string[];
  version: string;
  firstSeenAt: number;
  /** When the state last changed (epoch ms). */
  stateSince: number;
}

export interface MetricQuery {
  /** Only this project's agents. */
  project?: string;
  agent?: string;
  name?: string;
  /** Interval start ≥ from (epoch ms). */
  from?: number;
  /** Interval start < to (epoch ms). */
  to?: number;
  /** At most this many points: the most recent ones in the range (default 1000, at most MAX_QUERY_LIMIT). */
  limit?: number;
  /** Per-minute rollups instead of reporting-interval points. */
  rollup?: boolean;
}

export interface MetricRow {
  project: string;
  agentId: string;
  name: string;
  tags: Record<string, string>;
  kind: MetricKindName;
  /** Interval start, epoch ms. */
  ts: number;
  intervalMs: number;
  count: number;
  sum: number;
  /** null when count is 0. */
  min: number | null;
  max: number | null;
  /** Gauges only: the last value set. */
  value?: number | null;
  /** Histograms only (from the stored sketch, within 1%); null for counters and gauges. */
  p50: number | null;
  p95: number | null;
  p99: number | null;
}

export interface TraceRow {
  project: string;
  agentId: string;
  app: string;
  instanceId: string;
  txid: string;
  traceId: string;
  name: string;
  startTime: number;
  durationMs: number;
  error: string | null;
  trace: unknown;
}

export interface EventRow {
  project: string;
  agentId: string;
  app: string;
  instanceId: string;
  ts: number;
  type: string;
  message: string;
  event: unknown;
}

export interface BtRegistrationRow {
  project: string;
  agentId: string;
  name: string;
  app: string;
  firstSeenAt: number;
}

export interface KeyRow {
  projectId: string;
  name: string;
  createdAt: number;
  /** keyFingerprint(secret): identifies the key without revealing it. */
  fingerprint: string;
  /** Epoch ms, or null while the key is valid. */
  revokedAt: number | null;
}

export interface ListQuery {
  project?: string;
  agent?: string;
  limit?: number;
}

export interface SqliteStoreOptions {
  busyTimeoutMs?: number;
  /** A minute is final this long after it ends; points for a final minute are dropped as late (default 120000). */
  rollupGraceMs?: number;
  /** agentSeen writes an agent's last_seen at most this often (the newer value is kept in memory meanwhile). */
  seenPersistMs?: number;
  /** Told when an existing data directory's mode was wider than 0700 and was tightened (the old mode). */
  onDirTightened?: (dir: string, oldMode: number) => void;
}

export const MAX_QUERY_LIMIT = 10_000;
const DEFAULT_QUERY_LIMIT = 1000;
const SERIES_CACHE_MAX = 50_000;
const SQLITE_HEADER = Buffer.from('SQLite format 3\0', 'latin1');
/** synchronous: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA. */
const SYNC_NAMES = ['OFF', 'NORMAL', 'FULL', 'EXTRA'];

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
  CREATE TABLE agents (
    agent_id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    app TEXT NOT NULL,
    apps_json TEXT NOT NULL DEFAULT '[]',
    host TEXT NOT NULL,
    version TEXT NOT NULL,
    state TEXT NOT NULL,
    state_since INTEGER NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    licensed INTEGER NOT NULL DEFAULT 0
  );
  CREATE TABLE metric_packs (
    agent_id TEXT NOT NULL,
    pack_id TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (agent_id, pack_id)
  ) WITHOUT ROWID;
  CREATE INDEX metric_packs_by_time ON metric_packs (received_at);
  CREATE TABLE metric_points (
    agent_id TEXT NOT NULL,
    series_key BLOB NOT NULL,
    name TEXT NOT NULL,
    tags_json TEXT NOT NULL,
    kind INTEGER NOT NULL,
    interval_start INTEGER NOT NULL,
    interval_ms INTEGER NOT NULL,
    count INTEGER NOT NULL,
    sum REAL NOT NULL,
    min REAL,
    max REAL,
    last REAL,
    last_at INTEGER,
    sketch BLOB,
    PRIMARY KEY (agent_id, series_key, interval_start)
  );
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
  CREATE TABLE metric_rollups (
    agent_id TEXT NOT NULL,
    series_key BLOB NOT NULL,
    name TEXT NOT NULL,
    tags_json TEXT NOT NULL,
    kind INTEGER NOT NULL,
    interval_start INTEGER NOT NULL,
    interval_ms INTEGER NOT NULL,
    count INTEGER NOT NULL,
    sum REAL NOT NULL,
    min REAL,
    max REAL,
    last REAL,
    last_at INTEGER,
    sketch BLOB,
    PRIMARY KEY (agent_id, series_key, interval_start)
  );
  CREATE INDEX metric_rollups_by_name ON metric_rollups (name, interval_start);
  `,
  // 3: key points and rollups by (agent, interval start, series): an interval's rows are written
  // together, on neighbouring pages, instead of one page per series (measured: about 5x less WAL
  // written per stored frame).
  ...['metric_points', 'metric_rollups'].map(
    (t) => `
  CREATE TABLE ${t}_new (
    agent_id TEXT NOT NULL,
    series_key BLOB NOT NULL,
    name TEXT NOT NULL,
    tags_json TEXT NOT NULL,
    kind INTEGER NOT NULL,
    interval_start INTEGER NOT NULL,
    interval_ms INTEGER NOT NULL,
    count INTEGER NOT NULL,
    sum REAL NOT NULL,
    min REAL,
    max REAL,
    last REAL,
    last_at INTEGER,
    sketch BLOB,
    PRIMARY KEY (agent_id, interval_start, series_key)
  );
  INSERT INTO ${t}_new SELECT agent_id, series_key, name, tags_json, kind, interval_start, interval_ms, count, sum, min, max, last, last_at, sketch FROM ${t};
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

  ${['metric_points', 'metric_rollups']
    .map(
      (t) => `
  CREATE TABLE ${t}_new (
    agent_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    series_key BLOB NOT NULL,
    name TEXT NOT NULL,
    tags_json TEXT NOT NULL,
    kind INTEGER NOT NULL,
    interval_start INTEGER NOT NULL,
    interval_ms INTEGER NOT NULL,
    count INTEGER NOT NULL,
    sum REAL NOT NULL,
    min REAL,
    max REAL,
    last REAL,
    last_at INTEGER,
    sketch BLOB,
    PRIMARY KEY (agent_id, project_id, interval_start, series_key)
  );
  INSERT INTO ${t}_new SELECT t.agent_id, ${PROJECT_OF}, t.series_key, t.name, t.tags_json, t.kind, t.interval_start, t.interval_ms,
    t.count, t.sum, t.min, t.max, t.last, t.last_at, t.sketch FROM ${t} t;
  DROP TABLE ${t};
  ALTER TABLE ${t}_new RENAME TO ${t};
  CREATE INDEX ${t}_by_name ON ${t} (name, interval_start);
  ${t === 'metric_points' ? 'CREATE INDEX metric_points_by_start ON metric_points (interval_start);' : ''}`,
    )
    .join('\n')}

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

  CREATE TABLE agents_new (
    project_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    app TEXT NOT NULL,
    apps_json TEXT NOT NULL DEFAULT '[]',
    host TEXT NOT NULL,
    version TEXT NOT NULL,
    state TEXT NOT NULL,
    state_since INTEGER NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    licensed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (project_id, agent_id)
  );
  INSERT INTO agents_new SELECT project_id, agent_id, app, apps_json, host, version, state, state_since, first_seen, last_seen, licensed FROM agents;
  DROP TABLE agents;
  ALTER TABLE agents_new RENAME TO agents;
  DROP TABLE temp.agent_project;
  `,
];
export const SCHEMA_VERSION = MIGRATIONS.length;
export const ROLLUP_MS = 60_000;
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
]);

/** Read `PRAGMA synchronous` back and throw unless it is `wanted` (2 = FULL). Exported for tests. */
export function assertSynchronous(db: Database.Database, wanted = 2): void {
  const got = db.pragma('synchronous', { simple: true }) as number;
  if (got !== wanted) throw new StoreDurabilityError('synchronous', SYNC_NAMES[wanted] ?? String(wanted), SYNC_NAMES[got] ?? String(got));
}

/** Lower-case slug of a project name for its project id (a-z, 0-9, '-'); 'project' when nothing is left. */
export function projectSlug(name: string): string {
  const s = name
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+/, '')
    .slice(0, 56)
    .replace(/-+$/, '');
  return s.length > 0 ? s : 'project';
}

function isSqliteError(err: unknown): err is Error & { code: string } {
  const code: unknown = err instanceof Error ? (err as Error & { code?: unknown }).code : undefined;
  return typeof code === 'string' && code.startsWith('SQLITE_');
}

function isCorruption(err: unknown): boolean {
  return isSqliteError(err) && (err.code === 'SQLITE_NOTADB' || err.code.startsWith('SQLITE_CORRUPT'));
}

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Only the first 16 bytes: a non-empty file that does not start with SQLite's magic is not ours to touch. */
function hasSqliteHeader(path: string): boolean {
  const fd = openSync(path, 'r');
  try {
    const b = Buffer.alloc(16);
    const n = readSync(fd, b, 0, 16, 0);
    return n === 16 && b.equals(SQLITE_HEADER);
  } finally {
    closeSync(fd);
  }
}

/**
 * The data directory holds the access keys' secrets: nobody but its owner may list or
 * enter it. An existing directory open to group or others is tightened to 0700 (and the
 * caller told, to log it) when it is ours; a shared directory (sticky bit, like /tmp) or
 * another user's is refused rather than changed under its owner.
 */
function secureDataDir(dir: string, onTightened: ((dir: string, oldMode: number) => void) | undefined): void {
  let st: ReturnType<typeof statSync>;
  try {
    st = statSync(dir);
  } catch (err) {
    throw new StoreOpenError(dir, errText(err));
  }
  const mode = st.mode & 0o7777;
  if ((mode & 0o077) === 0) return;
  if ((mode & 0o1000) !== 0) throw new DataDirModeError(dir, mode, 'it is a shared directory (sticky bit)');
  const uid = process.geteuid?.();
  if (uid !== undefined && st.uid !== uid) throw new DataDirModeError(dir, mode, `it belongs to uid ${st.uid}, not to this user (uid ${uid})`);
  try {
    chmodSync(dir, mode & 0o700);
  } catch (err) {
    throw new StoreOpenError(dir, `cannot tighten its mode to 0700: ${errText(err)}`);
  }
  onTightened?.(dir, mode);
}

interface SeriesInfo {
  bytes: Buffer;
  tagsJson: string;
}

interface PointRow {
  agent_id: string;
  project_id: string;
  name: string;
  tags_json: string;
  kind: number;
  interval_start: number;
  interval_ms: number;
  count: number;
  sum: number;
  min: number | null;
  max: number | null;
  last: number | null;
  sketch: Buffer | null;
}

interface AgentDbRow {
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
  licensed: number;
}

function prepareAll(db: Database.Database) {
  return {
    projectKeys: db.prepare<[string], { id: number; secret: Buffer; revoked_at: number | null }>(
      'SELECT id, secret, revoked_at FROM keys WHERE project_id = ? ORDER BY id',
    ),
    revokedKeyIds: db.prepare<[], { id: number }>('SELECT id FROM keys WHERE revoked_at IS NOT NULL'),
    projectById: db.prepare<[string], { project_id: string; name: string }>('SELECT project_id, name FROM projects WHERE project_id = ?'),
    projectsByName: db.prepare<[string], { project_id: string; name: string }>('SELECT project_id, name FROM projects WHERE name = ? ORDER BY created_at'),
    insertProject: db.prepare('INSERT OR IGNORE INTO projects (project_id, name, created_at) VALUES (?, ?, ?)'),
    insertKey: db.prepare('INSERT OR IGNORE INTO keys (project_id, secret, created_at) VALUES (?, ?, ?)'),
    revokeKey: db.prepare('UPDATE keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL'),
    listKeys: db.prepare<[], { id: number; project_id: string; name: string; secret: Buffer; created_at: number; revoked_at: number | null }>(
      'SELECT k.id, k.project_id, p.name, k.secret, k.created_at, k.revoked_at FROM keys k JOIN projects p USING (project_id) ORDER BY k.created_at, k.id',
    ),
    agentConnected: db.prepare(`
      INSERT INTO agents (agent_id, project_id, app, apps_json, host, version, state, state_since, first_seen, last_seen, licensed)
      VALUES (@agentId, @projectId, @app, @appsJson, @host, @version, 'live', @at, @at, @at, 0)
      ON CONFLICT (project_id, agent_id) DO UPDATE SET
        app = CASE WHEN excluded.app = '' THEN app ELSE excluded.app END,
        apps_json = CASE WHEN excluded.app = '' THEN apps_json ELSE excluded.apps_json END,
        host = excluded.host,
        version = excluded.version,
        state = 'live',
        state_since = excluded.state_since,
        last_seen = max(last_seen, excluded.last_seen)`),
    agentState: db.prepare('UPDATE agents SET state = ?, state_since = ? WHERE project_id = ? AND agent_id = ? AND state <> ?'),
    agentSeen: db.prepare('UPDATE agents SET last_seen = max(last_seen, ?) WHERE project_id = ? AND agent_id = ?'),
    agentLicensed: db.prepare('UPDATE agents SET licensed = ? WHERE project_id = ? AND agent_id = ?'),
    resetSessions: db.prepare(
      "UPDATE agents SET state = CASE WHEN state = 'disconnected' THEN state ELSE 'disconnected' END, state_since = CASE WHEN state = 'disconnected' THEN state_since ELSE ? END, licensed = 0 WHERE state <> 'disconnected' OR licensed <> 0",
    ),
    listAgents: db.prepare<[], AgentDbRow>('SELECT * FROM agents ORDER BY agent_id, project_id'),
    agentsByState: db.prepare<[], { state: string; n: number }>('SELECT state, count(*) AS n FROM agents GROUP BY state'),
    insertPack: db.prepare('INSERT OR IGNORE INTO metric_packs (agent_id, project_id, pack_id, received_at) VALUES (?, ?, ?, ?)'),
    selectSketch: db.prepare<[string, string, Buffer, number], { sketch: Buffer | null }>(
      'SELECT sketch FROM metric_points WHERE agent_id = ? AND project_id = ? AND series_key = ? AND interval_start = ?',
    ),
    selectRollupSketch: db.prepare<[string, string, Buffer, number], { sketch: Buffer | null }>(
      'SELECT sketch FROM metric_rollups WHERE agent_id = ? AND project_id = ? AND series_key = ? AND interval_start = ?',
    ),
    // Merge in SQL; the caller merged the sketch already (it passes the merged bytes).
    // min(a, b) with a NULL argument is NULL, hence the coalesce: NULL means "no values".
    upsertPoint: db.prepare(`
      INSERT INTO metric_points (agent_id, project_id, series_key, name, tags_json, kind, interval_start, interval_ms, count, sum, min, max, last, last_at, sketch)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
      ON CONFLICT (agent_id, project_id, interval_start, series_key) DO UPDATE SET
        count = count + excluded.count,
        sum = sum + excluded.sum,
        min = coalesce(min(min, excluded.min), min, excluded.min),
        max = coalesce(max(max, excluded.max), max, excluded.max),
        last = CASE WHEN excluded.last IS NOT NULL AND (last IS NULL OR excluded.last_at >= last_at) THEN excluded.last ELSE last END,
        last_at = CASE WHEN excluded.last IS NOT NULL AND (last IS NULL OR excluded.last_at >= last_at) THEN excluded.last_at ELSE last_at END,
        sketch = coalesce(excluded.sketch, sketch)`),
    upsertRollup: db.prepare(`
      INSERT INTO metric_rollups (agent_id, project_id, series_key, name, tags_json, kind, interval_start, interval_ms, count, sum, min, max, last, last_at, sketch)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
      ON CONFLICT (agent_id, project_id, interval_start, series_key) DO UPDATE SET
        count = count + excluded.count,
        sum = sum + excluded.sum,
        min = coalesce(min(min, excluded.min), min, excluded.min),
        max = coalesce(max(max, excluded.max), max, excluded.max),
        last = CASE WHEN excluded.last IS NOT NULL AND (last IS NULL OR excluded.last_at >= last_at) THEN excluded.last ELSE last END,
        last_at = CASE WHEN excluded.last IS NOT NULL AND (last IS NULL OR excluded.last_at >= last_at) THEN excluded.last_at ELSE last_at END,
        sketch = coalesce(excluded.sketch, sketch)`),
    insertTrace: db.prepare(
      'INSERT INTO traces (project_id, agent_id, app, instance_id, txid, trace_id, name, start_time, duration_ms, error, body_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
    ),
    insertStack: db.prepare(
      'INSERT INTO active_stacks (project_id, agent_id, app, instance_id, txid, name, ts, elapsed_ms, body_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
    ),
    insertEvent: db.prepare('INSERT INTO events (project_id, agent_id, app, instance_id, ts, type, message, body_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?)'),
    insertSnapshot: db.prepare('INSERT INTO snapshots (project_id, agent_id, app, instance_id, ts, kind, body_json) VALUES (?, ?, ?, ?, ?, ?, ?)'),
    insertBt: db.prepare('INSERT OR IGNORE INTO bt_registrations (project_id, agent_id, name, app, first_seen) VALUES (?, ?, ?, ?, ?)'),
  };
}
type Statements = ReturnType<typeof prepareAll>;

export class SqliteStore implements CollectorStore {
  readonly path: string;
  /** Read tokens of the HTTP API. */
  readonly tokens: ReadTokens;
  private readonly db: Database.Database;
  private readonly st: Statements;
  private readonly seriesCache = new Map<string, SeriesInfo>();
  private readonly sketchWriter = new Writer(4096);
  private readonly queryCache = new Map<string, Database.Statement>();
  /** agentSeen: newest time per agent not yet written, and when each agent's last_seen was last written. */
  private readonly seenPending = new Map<string, { ref: AgentRef; at: number }>();
  private readonly seenWrittenAt = new Map<string, number>();
  private readonly seenPersistMs: number;
  private readonly rollupGraceMs: number;
  private closed = false;
  private readonly metricsTx: (agent: AgentRef, packs: UpMetricPack[], now: number) => StoreMetricsResult;
  private readonly textTx: (agent: AgentRef, items: TextItem[]) => StoreTextResult;
  private readonly keyTx: (name: string, now: number) => AccessKey & { created: boolean };

  /** Open (creating if needed) `<dataDir>/collector.db`. Throws StoreOpenError, StoreCorruptError, StoreDurabilityError, StoreVersionError. */
  static open(dataDir: string, opts: SqliteStoreOptions = {}): SqliteStore {
    const dir = resolve(dataDir);
    const path = join(dir, DB_FILE);
    try {
      // recursive mkdir returns the first directory it created (undefined when it existed).
      const created = mkdirSync(dir, { recursive: true, mode: 0o700 });
      if (created !== undefined) chmodSync(dir, 0o700);
      if (!statSync(dir).isDirectory()) throw new Error('not a directory');
    } catch (err) {
      throw new StoreOpenError(dir, errText(err));
    }
    secureDataDir(dir, opts.onDirTightened);
    try {
      // Create the file ourselves with 0600 so it is never readable by others, even briefly.
      if (!existsSync(path)) closeSync(openSync(path, 'wx', 0o600));
      else if (!statSync(path).isFile()) throw new Error('not a regular file');
    } catch (err) {
      throw new StoreOpenError(path, errText(err));
    }
    if (statSync(path).size > 0 && !hasSqliteHeader(path)) throw new StoreCorruptError(path, 'file is not an SQLite database');
    let db: Database.Database;
    try {
      db = new Database(path, { fileMustExist: true, timeout: opts.busyTimeoutMs ?? 5000 });
    } catch (err) {
      if (isCorruption(err)) throw new StoreCorruptError(path, errText(err));
      throw new StoreOpenError(path, errText(err));
    }
    try {
      return new SqliteStore(db, path, opts);
    } catch (err) {
      db.close();
      if (isCorruption(err)) throw new StoreCorruptError(path, errText(err));
      throw err;
    }
  }

  private constructor(db: Database.Database, path: string, opts: SqliteStoreOptions) {
    this.db = db;
    this.path = path;
    this.seenPersistMs = opts.seenPersistMs ?? 5000;
    this.rollupGraceMs = opts.rollupGraceMs ?? 120_000;
    db.pragma(`busy_timeout = ${Math.max(0, Math.floor(opts.busyTimeoutMs ?? 5000))}`);
    const mode = db.pragma('journal_mode = WAL', { simple: true }) as string;
    if (String(mode).toLowerCase() !== 'wal') throw new StoreDurabilityError('journal_mode', 'WAL', String(mode));
    db.pragma('synchronous = FULL');
    assertSynchronous(db, 2);
    this.migrate();
    this.secureFiles();
    this.st = prepareAll(db);
    this.tokens = new ReadTokens(db);
    this.metricsTx = db.transaction((agent: AgentRef, packs: UpMetricPack[], now: number) => this.storeMetricsIn(agent, packs, now)).immediate;
    this.textTx = db.transaction((agent: AgentRef, items: TextItem[]) => this.storeTextIn(agent, items)).immediate;
    this.keyTx = db.transaction((name: string, now: number) => this.createKeyIn(name, now)).immediate;
  }

  private migrate(): void {
    const version = this.db.pragma('user_version', { simple: true }) as number;
    if (version > SCHEMA_VERSION) throw new StoreVersionError(this.path, version, SCHEMA_VERSION);
    if (version === 0) {
      const tables = this.db
        .prepare<[], { name: string }>("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .all()
        .map((r) => r.name);
      const foreign = tables.filter((t) => !OUR_TABLES.has(t));
      if (foreign.length > 0) throw new StoreCorruptError(this.path, `it holds tables of another program: ${foreign.slice(0, 5).join(', ')}`);
    }
    if (version === SCHEMA_VERSION) return;
    this.db
      .transaction(() => {
        for (let v = version; v < SCHEMA_VERSION; v++) {
          this.db.exec(MIGRATIONS[v] as string);
          this.db.pragma(`user_version = ${v + 1}`);
        }
      })
      .immediate();
  }

  /** 0600 on the database and, when present, its -wal and -shm files (SQLite gives them the db's mode, but be sure). */
  private secureFiles(): void {
    for (const p of [this.path, `${this.path}-wal`, `${this.path}-shm`]) {
      try {
        chmodSync(p, 0o600);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new StoreOpenError(p, `cannot chmod 0600: ${errText(err)}`);
      }
    }
  }

  // ---------------------------------------------------------------- keys

  projectKeys(projectId: string): ProjectKey[] {
    return this.st.projectKeys.all(projectId).map((r) => ({ id: r.id, secret: r.secret, revokedAt: r.revoked_at }));
  }

  revokedKeyIds(): number[] {
    return this.st.revokedKeyIds.all().map((r) => r.id);
  }

  /**
   * A new access key (32 random bytes) for the project `project` names: the project with that id,
   * else the one with that name — a second key for an existing project is a rotation, and both
   * keys work until one is revoked. Otherwise a new project, id = slug(name)-<6 hex>.
   */
  createKey(project: string, now = Date.now()): AccessKey & { created: boolean } {
    const trimmed = project.trim();
    if (trimmed.length === 0) throw new ProjectNameError('it is empty');
    if (trimmed.length > 200) throw new ProjectNameError('it is longer than 200 characters');
    // biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting control characters is the point
    if (/[\u0000-\u001f\u007f]/.test(trimmed)) throw new ProjectNameError('it contains control characters');
    return this.keyTx(trimmed, now);
  }

  private createKeyIn(name: string, now: number): AccessKey & { created: boolean } {
    const existing = this.st.projectById.get(name) ?? this.onlyProjectNamed(name);
    if (existing !== undefined) {
      for (let attempt = 0; attempt < 4; attempt++) {
        const secret = randomBytes(32);
        if (this.st.insertKey.run(existing.project_id, secret, now).changes === 1) return { projectId: existing.project_id, secret, created: false };
      }
      throw new ProjectNameError(`could not add a key to project "${existing.project_id}"`);
    }
    const slug = projectSlug(name);
    for (let attempt = 0; attempt < 16; attempt++) {
      const projectId = `${slug}-${randomBytes(3).toString('hex')}`;
      if (!isProjectId(projectId)) throw new ProjectNameError(`"${projectId}" is not a valid project id`);
      if (this.st.insertProject.run(projectId, name, now).changes === 0) continue;
      const secret = randomBytes(32);
      this.st.insertKey.run(projectId, secret, now);
      return { projectId, secret, created: true };
    }
    throw new ProjectNameError(`could not find a free project id for "${slug}"`);
  }

  /** The project with this name; a name two projects share (made before rotation existed) is ambiguous. */
  private onlyProjectNamed(name: string): { project_id: string } | undefined {
    const rows = this.st.projectsByName.all(name);
    if (rows.length > 1)
      throw new ProjectNameError(`${rows.length} projects are named "${name}" (${rows.map((r) => r.project_id).join(', ')}); give the project id instead`);
    return rows[0];
  }

  /**
   * Revoke the key with this fingerprint (as `listKeys` shows it). Running collectors poll
   * revokedKeyIds() and end that key's sessions; new handshakes with it are refused at once.
   */
  revokeKey(fingerprint: string, now = Date.now()): { projectId: string; fingerprint: string; alreadyRevokedAt: number | null } {
    const fp = fingerprint.trim().toLowerCase();
    const match = this.st.listKeys.all().filter((r) => keyFingerprint(r.secret) === fp);
    const row = match[0];
    if (row === undefined) throw new KeyNotFoundError(fp);
    for (const r of match) this.st.revokeKey.run(now, r.id);
    return { projectId: row.project_id, fingerprint: fp, alreadyRevokedAt: row.revoked_at };
  }

  /** Every key without its secret (only a fingerprint of it). */
  listKeys(): KeyRow[] {
    return this.st.listKeys.all().map((r) => ({
      projectId: r.project_id,
      name: r.name,
      createdAt: r.created_at,
      fingerprint: keyFingerprint(r.secret),
      revokedAt: r.revoked_at,
    }));
  }

  // ---------------------------------------------------------------- agents

  agentConnected(projectId: string, info: AgentInfo, at: number): void {
    const app = info.apps[0] ?? '';
    this.st.agentConnected.run({ agentId: info.agentId, projectId, app, appsJson: JSON.stringify(info.apps), host: info.host, version: info.version, at });
    const key = agentKey({ projectId, agentId: info.agentId });
    this.seenPending.delete(key);
    this.seenWrittenAt.set(key, at);
  }

  agentState(agent: AgentRef, state: AgentState, at: number): void {
    // Leaving 'live' is a good moment to write the newest last_seen too.
    this.flushSeen(agent);
    this.st.agentState.run(state, at, agent.projectId, agent.agentId, state);
  }

  /**
   * Throttled: the newest time is always kept in memory (listAgents shows it) but written
   * at most every seenPersistMs per agent, and on state changes and close. Liveness is
   * not worth an fsync per frame.
   */
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

  private flushSeen(agent?: AgentRef): void {
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
   * At start-up no session is alive and the license pool is empty: every agent becomes
   * disconnected (since `at`, unless it already was) and unlicensed. Returns how many rows changed.
   */
  resetSessions(at: number): number {
    return this.st.resetSessions.run(at).changes;
  }

  /** Every agent ever seen (the API filters disconnected ones by age). app = the agent's first app. */
  listAgents(q: { project?: string } = {}): AgentListRow[] {
    const rows = this.st.listAgents.all().filter((r) => q.project === undefined || r.project_id === q.project);
    return rows.map((r) => {
      let apps: string[] = [];
      try {
        const parsed: unknown = JSON.parse(r.apps_json);
        if (Array.isArray(parsed)) apps = parsed.filter((a): a is string => typeof a === 'string');
      } catch {
        // keep []
      }
      const pending = this.seenPending.get(agentKey({ projectId: r.project_id, agentId: r.agent_id }))?.at;
      return {
        agentId: r.agent_id,
        projectId: r.project_id,
        app: r.app,
        apps,
        host: r.host,
        version: r.version,
        state: r.state as AgentState,
        stateSince: r.state_since,
        firstSeenAt: r.first_seen,
        lastSeenAt: pending !== undefined && pending > r.last_seen ? pending : r.last_seen,
        licensed: r.licensed === 1,
      };
    });
  }

  agentsByState(): Record<AgentState, number> {
    const out: Record<AgentState, number> = { live: 0, stalled: 0, disconnected: 0 };
    for (const r of this.st.agentsByState.all()) if (r.state in out) out[r.state as AgentState] = r.n;
    return out;
  }

  // ---------------------------------------------------------------- metrics

  storeMetrics(agent: AgentRef, packs: UpMetricPack[], now: number): StoreMetricsResult {
    return this.metricsTx(agent, packs, now);
  }

  private storeMetricsIn(agent: AgentRef, packs: UpMetricPack[], now: number): StoreMetricsResult {
    let stored = 0;
    let duplicatePacks = 0;
    let late = 0;
    for (const pack of packs) {
      if (this.st.insertPack.run(agent.agentId, agent.projectId, pack.packId, now).changes === 0) {
        duplicatePacks++;
        continue;
      }
      const minute = Math.floor(pack.intervalStart / ROLLUP_MS) * ROLLUP_MS;
      if (minute + ROLLUP_MS + this.rollupGraceMs <= now) {
        // The minute is final (its rollup is complete): drop, count; the caller still acks.
        late += pack.points.length;
        continue;
      }
      for (const pt of pack.points) {
        this.mergePoint(agent, pt, pack.intervalStart, pack.intervalMs, now, false);
        this.mergePoint(agent, pt, minute, ROLLUP_MS, now, true);
        stored++;
      }
    }
    return { stored, duplicatePacks, late };
  }

  private seriesInfo(s: Series): SeriesInfo {
    let info = this.seriesCache.get(s.key);
    if (info === undefined) {
      if (this.seriesCache.size >= SERIES_CACHE_MAX) this.seriesCache.clear();
      info = { bytes: Buffer.from(s.key, 'latin1'), tagsJson: JSON.stringify(s.tags) };
      this.seriesCache.set(s.key, info);
    }
    return info;
  }

  /** Merge a point into its interval row (metric_points) or its minute row (metric_rollups). */
  private mergePoint(agent: AgentRef, pt: MetricPoint, start: number, ms: number, now: number, rollup: boolean): void {
    const s = pt.series;
    const info = this.seriesInfo(s);
    let sketch: Buffer | null = null;
    if (s.kind === MetricKind.Histogram && pt.sketch !== null) {
      const row = (rollup ? this.st.selectRollupSketch : this.st.selectSketch).get(agent.agentId, agent.projectId, info.bytes, start);
      if (row?.sketch != null) {
        const merged = decodeSketch(row.sketch);
        merged.merge(pt.sketch);
        sketch = this.encodeSketch(merged);
      } else {
        sketch = this.encodeSketch(pt.sketch);
      }
    }
    const has = pt.count > 0 && Number.isFinite(pt.min) && Number.isFinite(pt.max);
    const last = s.kind === MetricKind.Gauge && Number.isFinite(pt.last) ? pt.last : null;
    (rollup ? this.st.upsertRollup : this.st.upsertPoint).run(
      agent.agentId,
      agent.projectId,
      info.bytes,
      s.name,
      info.tagsJson,
      s.kind,
      start,
      ms,
      pt.count,
      pt.sum,
      has ? pt.min : null,
      has ? pt.max : null,
      last,
      last === null ? null : now,
      sketch,
    );
  }

  private encodeSketch(s: Sketch): Buffer {
    s.encodeBuckets(this.sketchWriter);
    return this.sketchWriter.body();
  }

  /** Points by project, agent, name and interval start range: the most recent `limit` of them, oldest first. */
  queryMetrics(q: MetricQuery = {}): MetricRow[] {
    const where: string[] = [];
    const params: Record<string, unknown> = {};
    if (q.project !== undefined) {
      where.push('project_id = @project');
      params.project = q.project;
    }
    if (q.agent !== undefined) {
      where.push('agent_id = @agent');
      params.agent = q.agent;
    }
    if (q.name !== undefined) {
      where.push('name = @name');
      params.name = q.name;
    }
    if (q.from !== undefined) {
      where.push('interval_start >= @from');
      params.from = q.from;
    }
    if (q.to !== undefined) {
      where.push('interval_start < @to');
      params.to = q.to;
    }
    params.limit = Math.max(1, Math.min(MAX_QUERY_LIMIT, Math.floor(q.limit ?? DEFAULT_QUERY_LIMIT)));
    const table = q.rollup === true ? 'metric_rollups' : 'metric_points';
    const sql = `SELECT agent_id, project_id, name, tags_json, kind, interval_start, interval_ms, count, sum, min, max, last, sketch FROM ${table}${
      where.length > 0 ? ` WHERE ${where.join(' AND ')}` : ''
    } ORDER BY interval_start DESC, agent_id, project_id, name, series_key LIMIT @limit`;
    let stmt = this.queryCache.get(sql);
    if (stmt === undefined) {
      stmt = this.db.prepare(sql);
      this.queryCache.set(sql, stmt);
    }
    const rows = stmt.all(params) as PointRow[];
    const out: MetricRow[] = [];
    for (let i = rows.length - 1; i >= 0; i--) out.push(toMetricRow(rows[i] as PointRow));
    return out;
  }

  // ---------------------------------------------------------------- text items

  storeText(agent: AgentRef, items: TextItem[]): StoreTextResult {
    return this.textTx(agent, items);
  }

  private storeTextIn(agent: AgentRef, items: TextItem[]): StoreTextResult {
    const r: StoreTextResult = { traces: 0, activeStacks: 0, events: 0, snapshots: 0, btRegistrations: 0, btDuplicates: 0 };
    const { projectId: p, agentId: id } = agent;
    for (const it of items) {
      const o = it.origin;
      switch (it.kind) {
        case 'trace': {
          const t = it.trace;
          this.st.insertTrace.run(p, id, o.app, o.instanceId, t.txid, t.traceId, t.name, t.startTime, t.durationMs, t.error ?? null, JSON.stringify(t));
          r.traces++;
          break;
        }
        case 'activeStack': {
          const a = it.stack;
          this.st.insertStack.run(p, id, o.app, o.instanceId, a.txid, a.name, a.ts, a.elapsedMs, JSON.stringify(a));
          r.activeStacks++;
          break;
        }
        case 'event': {
          const e = it.event;
          this.st.insertEvent.run(p, id, o.app, o.instanceId, e.ts, e.type, e.message, JSON.stringify(e));
          r.events++;
          break;
        }
        case 'snapshot': {
          const s = it.snapshot;
          this.st.insertSnapshot.run(p, id, o.app, o.instanceId, s.ts, s.kind, JSON.stringify(s));
          r.snapshots++;
          break;
        }
        case 'btRegistration':
          if (this.st.insertBt.run(p, id, it.name, o.app, it.ts).changes === 1) r.btRegistrations++;
          else r.btDuplicates++;
          break;
      }
    }
    return r;
  }

  private list<T>(table: string, cols: string, q: ListQuery, map: (row: Record<string, unknown>) => T): T[] {
    const limit = Math.max(1, Math.min(MAX_QUERY_LIMIT, Math.floor(q.limit ?? 100)));
    const where: string[] = [];
    const params: Record<string, unknown> = { limit };
    if (q.project !== undefined) {
      where.push('project_id = @project');
      params.project = q.project;
    }
    if (q.agent !== undefined) {
      where.push('agent_id = @agent');
      params.agent = q.agent;
    }
    const sql = `SELECT project_id, ${cols} FROM ${table}${where.length > 0 ? ` WHERE ${where.join(' AND ')}` : ''} ORDER BY id DESC LIMIT @limit`;
    let stmt = this.queryCache.get(sql);
    if (stmt === undefined) {
      stmt = this.db.prepare(sql);
      this.queryCache.set(sql, stmt);
    }
    return (stmt.all(params) as Record<string, unknown>[]).map(map);
  }

  /** The most recent traces, newest first. */
  listTraces(q: ListQuery = {}): TraceRow[] {
    return this.list('traces', 'agent_id, app, instance_id, txid, trace_id, name, start_time, duration_ms, error, body_json', q, (r) => ({
      project: r.project_id as string,
      agentId: r.agent_id as string,
      app: r.app as string,
      instanceId: r.instance_id as string,
      txid: r.txid as string,
      traceId: r.trace_id as string,
      name: r.name as string,
      startTime: r.start_time as number,
      durationMs: r.duration_ms as number,
      error: (r.error as string | null) ?? null,
      trace: JSON.parse(r.body_json as string) as unknown,
    }));
  }

  /** The most recent events, newest first. */
  listEvents(q: ListQuery = {}): EventRow[] {
    return this.list('events', 'agent_id, app, instance_id, ts, type, message, body_json', q, (r) => ({
      project: r.project_id as string,
      agentId: r.agent_id as string,
      app: r.app as string,
      instanceId: r.instance_id as string,
      ts: r.ts as number,
      type: r.type as string,
      message: r.message as string,
      event: JSON.parse(r.body_json as string) as unknown,
    }));
  }

  listBtRegistrations(q: { project?: string; agent?: string } = {}): BtRegistrationRow[] {
    const where: string[] = [];
    const params: Record<string, string> = {};
    if (q.project !== undefined) {
      where.push('project_id = @project');
      params.project = q.project;
    }
    if (q.agent !== undefined) {
      where.push('agent_id = @agent');
      params.agent = q.agent;
    }
    const sql = `SELECT project_id, agent_id, name, app, first_seen FROM bt_registrations${where.length > 0 ? ` WHERE ${where.join(' AND ')}` : ''} ORDER BY agent_id, project_id, name`;
    const rows = this.db.prepare(sql).all(params) as { project_id: string; agent_id: string; name: string; app: string; first_seen: number }[];
    return rows.map((r) => ({ project: r.project_id, agentId: r.agent_id, name: r.name, app: r.app, firstSeenAt: r.first_seen }));
  }

  /** Row counts of the data tables (for status output and tests). */
  counts(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const t of ['agents', 'projects', 'keys', 'metric_packs', 'metric_points', 'traces', 'active_stacks', 'events', 'snapshots', 'bt_registrations']) {
      out[t] = (this.db.prepare(`SELECT count(*) AS n FROM ${t}`).get() as { n: number }).n;
    }
    return out;
  }

  /** A PRAGMA's value, for diagnostics and tests (e.g. 'synchronous', 'journal_mode'). */
  pragma(name: string): unknown {
    return this.db.pragma(name, { simple: true });
  }

  get isOpen(): boolean {
    return !this.closed;
  }

  /** Write pending last-seen times and close. Safe to call twice. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.flushSeen();
    } finally {
      this.db.close();
    }
  }
}

function decodeSketch(bytes: Buffer): Sketch {
  const s = new Sketch();
  s.decodeBuckets(new Reader(bytes));
  return s;
}

function finiteOrNull(v: number): number | null {
  return Number.isFinite(v) ? v : null;
}

function toMetricRow(r: PointRow): MetricRow {
  const kind = METRIC_KIND_NAMES[r.kind] ?? 'counter';
  const row: MetricRow = {
    project: r.project_id,
    agentId: r.agent_id,
    name: r.name,
    tags: JSON.parse(r.tags_json) as Record<string, string>,
    kind,
    ts: r.interval_start,
    intervalMs: r.interval_ms,
    count: r.count,
    sum: r.sum,
    min: r.min,
    max: r.max,
    p50: null,
    p95: null,
    p99: null,
  };
  if (r.kind === MetricKind.Gauge) row.value = r.last;
  if (r.kind === MetricKind.Histogram && r.sketch !== null && r.count > 0) {
    const s = decodeSketch(r.sketch);
    // quantile() walks bucket counts; count/min/max bound and clamp it.
    s.count = r.count;
    s.sum = r.sum;
    if (r.min !== null) s.min = r.min;
    if (r.max !== null) s.max = r.max;
    row.p50 = finiteOrNull(s.quantile(0.5));
    row.p95 = finiteOrNull(s.quantile(0.95));
    row.p99 = finiteOrNull(s.quantile(0.99));
  }
  return row;
}
