import type Database from 'better-sqlite3';
import type { AgentInfo, TextItem, UpMetricPack } from '@apm-sidecar/proto/upstream';
import { StoreCorruptError } from '../errors';
import type { AgentRef, AgentState, AgentStateChange, CollectorStore, ProjectKey, StateCause, StoreMetricsResult, StoreTextResult } from '../types';
import { type AgentListRow, AgentStore } from './agents';
import { type CreatedKey, type KeyRow, KeyStore } from './keys';
import { MetricStore } from './metrics';
import { type OpenOptions, errText, isCorruption, openDatabaseFile, secureFiles, setDurability } from './open';
import {
  type BtRegistrationRow,
  type EventRow,
  type ListQuery,
  type MetricQuery,
  type MetricRow,
  Queries,
  type SnapshotRow,
  type TraceQuery,
  type TraceRow,
} from './queries';
import { ReadTokens } from './read-tokens';
import { migrate } from './schema';
import { TextStore } from './text-items';

export type { AgentListRow } from './agents';
export { type KeyRow, projectSlug } from './keys';
export { DB_FILE, assertSynchronous } from './open';
export {
  type BtRegistrationRow,
  type EventRow,
  type ListQuery,
  MAX_QUERY_LIMIT,
  type MetricQuery,
  type MetricRow,
  type SnapshotRow,
  type TraceQuery,
  type TraceRow,
} from './queries';
export * from './read-tokens';
export { ROLLUP_MS, isMinuteFinal, minuteOf } from './rollup';
export { MIGRATIONS, SCHEMA_VERSION } from './schema';

/**
 * The collector's SQLite storage (one file, `<dataDir>/collector.db`), one part per file:
 *
 *   open.ts          the file, its modes, WAL + synchronous FULL
 *   schema.ts        tables and migrations
 *   keys.ts          projects, access keys, revocation
 *   read-tokens.ts   read tokens of the HTTP API
 *   agents.ts        agents and their liveness (setAgentState, the one writer of state)
 *   metrics.ts       packs, points, rollups; metric-table.ts their statements; rollup.ts when a minute is final
 *   text-items.ts    traces, events, snapshots, active stacks, registrations
 *   queries.ts       what the API reads
 *
 * Every write method is one IMMEDIATE transaction, committed before it returns, so an ack
 * sent after it never covers data that could be lost (agentSeen is the one exception: it is
 * throttled, see agents.ts). An agent is (project, agent_id) in every table: the same
 * agent_id under two projects is two agents, with their own rows, packs, points and items.
 */

export interface SqliteStoreOptions extends OpenOptions {
  /** A minute is final this long after it ends; points for a final minute are dropped as late (default 120000). */
  rollupGraceMs?: number;
  /** agentSeen writes an agent's last_seen at most this often (the newer value is kept in memory meanwhile). */
  seenPersistMs?: number;
}

export class SqliteStore implements CollectorStore {
  /** Read tokens of the HTTP API. */
  readonly tokens: ReadTokens;
  private readonly keys: KeyStore;
  private readonly agents: AgentStore;
  private readonly metrics: MetricStore;
  private readonly text: TextStore;
  private readonly queries: Queries;
  private closed = false;

  /** Open (creating if needed) `<dataDir>/collector.db`. Throws StoreOpenError, StoreCorruptError, StoreDurabilityError, StoreVersionError. */
  static open(dataDir: string, opts: SqliteStoreOptions = {}): SqliteStore {
    const { db, path } = openDatabaseFile(dataDir, opts);
    try {
      return new SqliteStore(db, path, opts);
    } catch (err) {
      db.close();
      if (isCorruption(err)) throw new StoreCorruptError(path, errText(err));
      throw err;
    }
  }

  private constructor(
    private readonly db: Database.Database,
    readonly path: string,
    opts: SqliteStoreOptions,
  ) {
    setDurability(db, opts.busyTimeoutMs);
    migrate(db, path);
    secureFiles(path);
    this.tokens = new ReadTokens(db);
    this.keys = new KeyStore(db);
    this.agents = new AgentStore(db, opts.seenPersistMs ?? 5000);
    this.metrics = new MetricStore(db, opts.rollupGraceMs ?? 120_000);
    this.text = new TextStore(db);
    this.queries = new Queries(db);
  }

  // keys.ts
  projectKeys(projectId: string): ProjectKey[] {
    return this.keys.projectKeys(projectId);
  }
  revokedKeyIds(): number[] {
    return this.keys.revokedKeyIds();
  }
  createKey(project: string, now = Date.now()): CreatedKey {
    return this.keys.createKey(project, now);
  }
  revokeKey(fingerprint: string, now = Date.now()): ReturnType<KeyStore['revokeKey']> {
    return this.keys.revokeKey(fingerprint, now);
  }
  listKeys(): KeyRow[] {
    return this.keys.listKeys();
  }

  // agents.ts
  agentConnected(projectId: string, info: AgentInfo, at: number): AgentStateChange | null {
    return this.agents.agentConnected(projectId, info, at);
  }
  agentInfo(projectId: string, info: AgentInfo, at: number): void {
    this.agents.agentInfo(projectId, info, at);
  }
  setAgentState(agent: AgentRef, to: AgentState, cause: StateCause): AgentStateChange | null {
    return this.agents.setAgentState(agent, to, cause);
  }
  agentSeen(agent: AgentRef, at: number): void {
    this.agents.agentSeen(agent, at);
  }
  agentLicensed(agent: AgentRef, licensed: boolean): void {
    this.agents.agentLicensed(agent, licensed);
  }
  resetSessions(at: number): number {
    return this.agents.resetSessions(at);
  }
  listAgents(q: { project?: string } = {}): AgentListRow[] {
    return this.agents.listAgents(q);
  }
  agentsByState(): Record<AgentState, number> {
    return this.agents.agentsByState();
  }

  // metrics.ts, text-items.ts
  storeMetrics(agent: AgentRef, packs: UpMetricPack[], now: number): StoreMetricsResult {
    return this.metrics.storeMetrics(agent, packs, now);
  }
  storeText(agent: AgentRef, items: TextItem[]): StoreTextResult {
    return this.text.storeText(agent, items);
  }

  // queries.ts
  queryMetrics(q: MetricQuery = {}): MetricRow[] {
    return this.queries.queryMetrics(q);
  }
  listTraces(q: TraceQuery = {}): TraceRow[] {
    return this.queries.listTraces(q);
  }
  listSnapshots(q: ListQuery = {}): SnapshotRow[] {
    return this.queries.listSnapshots(q);
  }
  listEvents(q: ListQuery = {}): EventRow[] {
    return this.queries.listEvents(q);
  }
  listBtRegistrations(q: ListQuery = {}): BtRegistrationRow[] {
    return this.queries.listBtRegistrations(q);
  }
  counts(): Record<string, number> {
    return this.queries.counts();
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
      this.agents.flushSeen();
    } finally {
      this.db.close();
    }
  }
}
