import { randomBytes } from 'node:crypto';
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, readSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import Database from 'better-sqlite3';
import { METRIC_KIND_NAMES, MetricKind, type MetricKindName, type MetricPoint, Reader, type Series, Sketch, Writer } from '@apm-sidecar/proto';
import { type AccessKey, type AgentInfo, type TextItem, type UpMetricPack, isProjectId, keyFingerprint } from '@apm-sidecar/proto/upstream';
import { ReadTokens } from './read-tokens';
import { ProjectNameError, StoreCorruptError, StoreDurabilityError, StoreOpenError, StoreVersionError } from './errors';
import type { AgentRow, AgentState, CollectorStore, StoreMetricsResult, StoreTextResult } from './types';

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
 * Exactly-once metrics: a pack id is unique per agent and stable across
 * resends; `metric_packs` remembers every pack stored, and a pack seen again is
 * skipped. Points merge into (agent, series bytes, interval start):
 *
 *   count, sum  added          min, max  min/max          gauge last  the most recently received
 *   sketch      bucket counts added (Sketch.merge), stored as Sketch.encodeBuckets bytes
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
  agent?: string;
  /** Only the rows of this project (see projectCondition). */
  project?: string;
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
  agentId: string;
  app: string;
  instanceId: string;
  ts: number;
  type: string;
  message: string;
  event: unknown;
}

export interface BtRegistrationRow {
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
}

export interface ListQuery {
  agent?: string;
  /** Only the rows of this project (see projectCondition). */
  project?: string;
  limit?: number;
}

export interface SqliteStoreOptions {
  busyTimeoutMs?: number;
  /** A minute is final this long after it ends; points for a final minute are dropped as late (default 120000). */
  rollupGraceMs?: number;
  /** agentSeen writes an agent's last_seen at most this often (the newer value is kept in memory meanwhile). */
  seenPersistMs?: number;
}

export const MAX_QUERY_LIMIT = 10_000;
const DEFAULT_QUERY_LIMIT = 1000;
const SERIES_CACHE_MAX = 50_000;
const SQLITE_HEADER = Buffer.from('SQLite format 3\0', 'latin1');
/** synchronous: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA. */
const SYNC_NAMES = ['OFF', 'NORMAL', 'FULL', 'EXTRA'];

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
];
export const SCHEMA_VERSION = MIGRATIONS.length;
export const ROLLUP_MS = 60_000;
const OUR_TABLES = new Set([
  'keys',
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

/**
 * The SQL condition that keeps, in a table with an agent_id column, only the rows of project
 * `@project`: those of the agents bound to that project's access key. The one place that says
 * which rows belong to a project.
 */
export function projectCondition(): string {
  return 'agent_id IN (SELECT agent_id FROM agents WHERE project_id = @project)';
}

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

interface SeriesInfo {
  bytes: Buffer;
  tagsJson: string;
}

interface PointRow {
  agent_id: string;
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
    keySecret: db.prepare<[string], { secret: Buffer }>('SELECT secret FROM keys WHERE project_id = ?'),
    insertKey: db.prepare('INSERT OR IGNORE INTO keys (project_id, name, secret, created_at) VALUES (?, ?, ?, ?)'),
    listKeys: db.prepare<[], { project_id: string; name: string; secret: Buffer; created_at: number }>(
      'SELECT project_id, name, secret, created_at FROM keys ORDER BY created_at, project_id',
    ),
    agentConnected: db.prepare(`
      INSERT INTO agents (agent_id, project_id, app, apps_json, host, version, state, state_since, first_seen, last_seen, licensed)
      VALUES (@agentId, @projectId, @app, @appsJson, @host, @version, 'live', @at, @at, @at, 0)
      ON CONFLICT (agent_id) DO UPDATE SET
        project_id = excluded.project_id,
        app = CASE WHEN excluded.app = '' THEN app ELSE excluded.app END,
        apps_json = CASE WHEN excluded.app = '' THEN apps_json ELSE excluded.apps_json END,
        host = excluded.host,
        version = excluded.version,
        state = 'live',
        state_since = excluded.state_since,
        last_seen = max(last_seen, excluded.last_seen)`),
    agentState: db.prepare('UPDATE agents SET state = ?, state_since = ? WHERE agent_id = ? AND state <> ?'),
    agentSeen: db.prepare('UPDATE agents SET last_seen = max(last_seen, ?) WHERE agent_id = ?'),
    agentLicensed: db.prepare('UPDATE agents SET licensed = ? WHERE agent_id = ?'),
    resetSessions: db.prepare(
      "UPDATE agents SET state = CASE WHEN state = 'disconnected' THEN state ELSE 'disconnected' END, state_since = CASE WHEN state = 'disconnected' THEN state_since ELSE ? END, licensed = 0 WHERE state <> 'disconnected' OR licensed <> 0",
    ),
    listAgents: db.prepare<[], AgentDbRow>('SELECT * FROM agents ORDER BY agent_id'),
    agentsByState: db.prepare<[], { state: string; n: number }>('SELECT state, count(*) AS n FROM agents GROUP BY state'),
    insertPack: db.prepare('INSERT OR IGNORE INTO metric_packs (agent_id, pack_id, received_at) VALUES (?, ?, ?)'),
    selectSketch: db.prepare<[string, Buffer, number], { sketch: Buffer | null }>(
      'SELECT sketch FROM metric_points WHERE agent_id = ? AND series_key = ? AND interval_start = ?',
    ),
    selectRollupSketch: db.prepare<[string, Buffer, number], { sketch: Buffer | null }>(
      'SELECT sketch FROM metric_rollups WHERE agent_id = ? AND series_key = ? AND interval_start = ?',
    ),
    // Merge in SQL; the caller merged the sketch already (it passes the merged bytes).
    // min(a, b) with a NULL argument is NULL, hence the coalesce: NULL means "no values".
    upsertPoint: db.prepare(`
      INSERT INTO metric_points (agent_id, series_key, name, tags_json, kind, interval_start, interval_ms, count, sum, min, max, last, last_at, sketch)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
      ON CONFLICT (agent_id, interval_start, series_key) DO UPDATE SET
        count = count + excluded.count,
        sum = sum + excluded.sum,
        min = coalesce(min(min, excluded.min), min, excluded.min),
        max = coalesce(max(max, excluded.max), max, excluded.max),
        last = CASE WHEN excluded.last IS NOT NULL AND (last IS NULL OR excluded.last_at >= last_at) THEN excluded.last ELSE last END,
        last_at = CASE WHEN excluded.last IS NOT NULL AND (last IS NULL OR excluded.last_at >= last_at) THEN excluded.last_at ELSE last_at END,
        sketch = coalesce(excluded.sketch, sketch)`),
    upsertRollup: db.prepare(`
      INSERT INTO metric_rollups (agent_id, series_key, name, tags_json, kind, interval_start, interval_ms, count, sum, min, max, last, last_at, sketch)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
      ON CONFLICT (agent_id, interval_start, series_key) DO UPDATE SET
        count = count + excluded.count,
        sum = sum + excluded.sum,
        min = coalesce(min(min, excluded.min), min, excluded.min),
        max = coalesce(max(max, excluded.max), max, excluded.max),
        last = CASE WHEN excluded.last IS NOT NULL AND (last IS NULL OR excluded.last_at >= last_at) THEN excluded.last ELSE last END,
        last_at = CASE WHEN excluded.last IS NOT NULL AND (last IS NULL OR excluded.last_at >= last_at) THEN excluded.last_at ELSE last_at END,
        sketch = coalesce(excluded.sketch, sketch)`),
    insertTrace: db.prepare(
      'INSERT INTO traces (agent_id, app, instance_id, txid, trace_id, name, start_time, duration_ms, error, body_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
    ),
    insertStack: db.prepare('INSERT INTO active_stacks (agent_id, app, instance_id, txid, name, ts, elapsed_ms, body_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?)'),
    insertEvent: db.prepare('INSERT INTO events (agent_id, app, instance_id, ts, type, message, body_json) VALUES (?, ?, ?, ?, ?, ?, ?)'),
    insertSnapshot: db.prepare('INSERT INTO snapshots (agent_id, app, instance_id, ts, kind, body_json) VALUES (?, ?, ?, ?, ?, ?)'),
    insertBt: db.prepare('INSERT OR IGNORE INTO bt_registrations (agent_id, name, app, first_seen) VALUES (?, ?, ?, ?)'),
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
  private readonly seenPending = new Map<string, number>();
  private readonly seenWrittenAt = new Map<string, number>();
  private readonly seenPersistMs: number;
  private readonly rollupGraceMs: number;
  private closed = false;
  private readonly metricsTx: (agentId: string, packs: UpMetricPack[], now: number) => StoreMetricsResult;
  private readonly textTx: (agentId: string, items: TextItem[]) => StoreTextResult;

  /** Open (creating if needed) `<dataDir>/collector.db`. Throws StoreOpenError, StoreCorruptError, StoreDurabilityError, StoreVersionError. */
  static open(dataDir: string, opts: SqliteStoreOptions = {}): SqliteStore {
    const dir = resolve(dataDir);
    const path = join(dir, DB_FILE);
    try {
      // recursive mkdir returns the first directory it created (undefined when it existed):
      // only a directory we created is forced to 0700; an existing one is the operator's.
      const created = mkdirSync(dir, { recursive: true, mode: 0o700 });
      if (created !== undefined) chmodSync(dir, 0o700);
      if (!statSync(dir).isDirectory()) throw new Error('not a directory');
    } catch (err) {
      throw new StoreOpenError(dir, errText(err));
    }
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
    this.metricsTx = db.transaction((agentId: string, packs: UpMetricPack[], now: number) => this.storeMetricsIn(agentId, packs, now)).immediate;
    this.textTx = db.transaction((agentId: string, items: TextItem[]) => this.storeTextIn(agentId, items)).immediate;
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

  keySecret(projectId: string): Buffer | undefined {
    return this.st.keySecret.get(projectId)?.secret;
  }

  /** A new access key for a project named `name`: project id = slug(name)-<6 hex>, secret = 32 random bytes. */
  createKey(name: string, now = Date.now()): AccessKey {
    const trimmed = name.trim();
    if (trimmed.length === 0) throw new ProjectNameError('it is empty');
    if (trimmed.length > 200) throw new ProjectNameError('it is longer than 200 characters');
    // biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting control characters is the point
    if (/[\u0000-\u001f\u007f]/.test(trimmed)) throw new ProjectNameError('it contains control characters');
    const slug = projectSlug(trimmed);
    for (let attempt = 0; attempt < 16; attempt++) {
      const projectId = `${slug}-${randomBytes(3).toString('hex')}`;
      if (!isProjectId(projectId)) throw new ProjectNameError(`"${projectId}" is not a valid project id`);
      const secret = randomBytes(32);
      if (this.st.insertKey.run(projectId, trimmed, secret, now).changes === 1) return { projectId, secret };
    }
    throw new ProjectNameError(`could not find a free project id for "${slug}"`);
  }

  /** Every key without its secret (only a fingerprint of it). */
  listKeys(): KeyRow[] {
    return this.st.listKeys.all().map((r) => ({ projectId: r.project_id, name: r.name, createdAt: r.created_at, fingerprint: keyFingerprint(r.secret) }));
  }

  // ---------------------------------------------------------------- agents

  agentConnected(projectId: string, info: AgentInfo, at: number): void {
    const app = info.apps[0] ?? '';
    this.st.agentConnected.run({ agentId: info.agentId, projectId, app, appsJson: JSON.stringify(info.apps), host: info.host, version: info.version, at });
    this.seenPending.delete(info.agentId);
    this.seenWrittenAt.set(info.agentId, at);
  }

  agentState(agentId: string, state: AgentState, at: number): void {
    // Leaving 'live' is a good moment to write the newest last_seen too.
    this.flushSeen(agentId);
    this.st.agentState.run(state, at, agentId, state);
  }

  /**
   * Throttled: the newest time is always kept in memory (listAgents shows it) but written
   * at most every seenPersistMs per agent, and on state changes and close. Liveness is
   * not worth an fsync per frame.
   */
  agentSeen(agentId: string, at: number): void {
    const written = this.seenWrittenAt.get(agentId);
    if (written !== undefined && at - written < this.seenPersistMs) {
      const pending = this.seenPending.get(agentId);
      if (pending === undefined || at > pending) this.seenPending.set(agentId, at);
      return;
    }
    this.seenPending.delete(agentId);
    this.seenWrittenAt.set(agentId, at);
    this.st.agentSeen.run(at, agentId);
  }

  private flushSeen(agentId?: string): void {
    const ids = agentId === undefined ? [...this.seenPending.keys()] : this.seenPending.has(agentId) ? [agentId] : [];
    for (const id of ids) {
      const at = this.seenPending.get(id) as number;
      this.seenPending.delete(id);
      this.seenWrittenAt.set(id, at);
      this.st.agentSeen.run(at, id);
    }
  }

  agentLicensed(agentId: string, licensed: boolean): void {
    this.st.agentLicensed.run(licensed ? 1 : 0, agentId);
  }

  /**
   * At start-up no session is alive and the license pool is empty: every agent becomes
   * disconnected (since `at`, unless it already was) and unlicensed. Returns how many rows changed.
   */
  resetSessions(at: number): number {
    return this.st.resetSessions.run(at).changes;
  }

  /** Every agent ever seen (the API filters disconnected ones by age). app = the agent's first app. */
  listAgents(): AgentListRow[] {
    return this.st.listAgents.all().map((r) => {
      let apps: string[] = [];
      try {
        const parsed: unknown = JSON.parse(r.apps_json);
        if (Array.isArray(parsed)) apps = parsed.filter((a): a is string => typeof a === 'string');
      } catch {
        // keep []
      }
      const pending = this.seenPending.get(r.agent_id);
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

  storeMetrics(agentId: string, packs: UpMetricPack[], now: number): StoreMetricsResult {
    return this.metricsTx(agentId, packs, now);
  }

  private storeMetricsIn(agentId: string, packs: UpMetricPack[], now: number): StoreMetricsResult {
    let stored = 0;
    let duplicatePacks = 0;
    let late = 0;
    for (const pack of packs) {
      if (this.st.insertPack.run(agentId, pack.packId, now).changes === 0) {
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
        this.mergePoint(agentId, pt, pack.intervalStart, pack.intervalMs, now, false);
        this.mergePoint(agentId, pt, minute, ROLLUP_MS, now, true);
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
  private mergePoint(agentId: string, pt: MetricPoint, start: number, ms: number, now: number, rollup: boolean): void {
    const s = pt.series;
    const info = this.seriesInfo(s);
    let sketch: Buffer | null = null;
    if (s.kind === MetricKind.Histogram && pt.sketch !== null) {
      const row = (rollup ? this.st.selectRollupSketch : this.st.selectSketch).get(agentId, info.bytes, start);
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
      agentId,
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

  /** Points by agent, name and interval start range: the most recent `limit` of them, oldest first. */
  queryMetrics(q: MetricQuery = {}): MetricRow[] {
    const where: string[] = [];
    const params: Record<string, unknown> = {};
    if (q.agent !== undefined) {
      where.push('agent_id = @agent');
      params.agent = q.agent;
    }
    if (q.project !== undefined) {
      where.push(projectCondition());
      params.project = q.project;
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
    const sql = `SELECT agent_id, name, tags_json, kind, interval_start, interval_ms, count, sum, min, max, last, sketch FROM ${table}${
      where.length > 0 ? ` WHERE ${where.join(' AND ')}` : ''
    } ORDER BY interval_start DESC, agent_id, name, series_key LIMIT @limit`;
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

  storeText(agentId: string, items: TextItem[]): StoreTextResult {
    return this.textTx(agentId, items);
  }

  private storeTextIn(agentId: string, items: TextItem[]): StoreTextResult {
    const r: StoreTextResult = { traces: 0, activeStacks: 0, events: 0, snapshots: 0, btRegistrations: 0, btDuplicates: 0 };
    for (const it of items) {
      const o = it.origin;
      switch (it.kind) {
        case 'trace': {
          const t = it.trace;
          this.st.insertTrace.run(agentId, o.app, o.instanceId, t.txid, t.traceId, t.name, t.startTime, t.durationMs, t.error ?? null, JSON.stringify(t));
          r.traces++;
          break;
        }
        case 'activeStack': {
          const a = it.stack;
          this.st.insertStack.run(agentId, o.app, o.instanceId, a.txid, a.name, a.ts, a.elapsedMs, JSON.stringify(a));
          r.activeStacks++;
          break;
        }
        case 'event': {
          const e = it.event;
          this.st.insertEvent.run(agentId, o.app, o.instanceId, e.ts, e.type, e.message, JSON.stringify(e));
          r.events++;
          break;
        }
        case 'snapshot': {
          const s = it.snapshot;
          this.st.insertSnapshot.run(agentId, o.app, o.instanceId, s.ts, s.kind, JSON.stringify(s));
          r.snapshots++;
          break;
        }
        case 'btRegistration':
          if (this.st.insertBt.run(agentId, it.name, o.app, it.ts).changes === 1) r.btRegistrations++;
          else r.btDuplicates++;
          break;
      }
    }
    return r;
  }

  private list<T>(table: string, cols: string, q: ListQuery, map: (row: Record<string, unknown>) => T): T[] {
    const limit = Math.max(1, Math.min(MAX_QUERY_LIMIT, Math.floor(q.limit ?? 100)));
    const where = [...(q.agent !== undefined ? ['agent_id = @agent'] : []), ...(q.project !== undefined ? [projectCondition()] : [])];
    const sql = `SELECT ${cols} FROM ${table}${where.length > 0 ? ` WHERE ${where.join(' AND ')}` : ''} ORDER BY id DESC LIMIT @limit`;
    let stmt = this.queryCache.get(sql);
    if (stmt === undefined) {
      stmt = this.db.prepare(sql);
      this.queryCache.set(sql, stmt);
    }
    const params: Record<string, unknown> = { limit };
    if (q.agent !== undefined) params.agent = q.agent;
    if (q.project !== undefined) params.project = q.project;
    return (stmt.all(params) as Record<string, unknown>[]).map(map);
  }

  /** The most recent traces, newest first. */
  listTraces(q: ListQuery = {}): TraceRow[] {
    return this.list('traces', 'agent_id, app, instance_id, txid, trace_id, name, start_time, duration_ms, error, body_json', q, (r) => ({
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
      agentId: r.agent_id as string,
      app: r.app as string,
      instanceId: r.instance_id as string,
      ts: r.ts as number,
      type: r.type as string,
      message: r.message as string,
      event: JSON.parse(r.body_json as string) as unknown,
    }));
  }

  listBtRegistrations(agent?: string): BtRegistrationRow[] {
    const sql = `SELECT agent_id, name, app, first_seen FROM bt_registrations${agent !== undefined ? ' WHERE agent_id = ?' : ''} ORDER BY agent_id, name`;
    const rows = (agent !== undefined ? this.db.prepare(sql).all(agent) : this.db.prepare(sql).all()) as {
      agent_id: string;
      name: string;
      app: string;
      first_seen: number;
    }[];
    return rows.map((r) => ({ agentId: r.agent_id, name: r.name, app: r.app, firstSeenAt: r.first_seen }));
  }

  /** Row counts of the data tables (for status output and tests). */
  counts(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const t of ['agents', 'keys', 'metric_packs', 'metric_points', 'traces', 'active_stacks', 'events', 'snapshots', 'bt_registrations']) {
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
