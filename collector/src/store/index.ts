import type Database from 'better-sqlite3';
import type { AgentInfo, TextItem, UpMetricPack } from '@apm-sidecar/proto/upstream';
import { StoreCorruptError } from '../errors';
import type { AgentRef, AgentState, AgentStateChange, ProjectKey, StateCause, StoreMetricsResult, StoreTextResult } from '../types';
import { type AgentListRow, AgentStore } from './agents';
import type { AgentConnect, CollectorInfo, CollectorRow, LicenseGrant, ReapResult } from './contract';
import { FleetStore } from './fleet';
import { SqliteKeyImport } from './key-import';
import { type CreatedKey, type KeyRow, KeyStore } from './keys';
import { MetricStore } from './metrics';
import { type OpenOptions, type SessionWrite, errText, isCorruption, openDatabaseFile, secureFiles, sessionWrites, setDurability } from './open';
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
import { SqlitePruner } from './prune';
import { type RebuildResult, rebuildFromTables } from './rebuild';
import { migrate } from './schema';
import { TextStore } from './text-items';

export type { AgentListRow } from './agents';
export { type KeyRow, projectSlug } from './keys';
export { DB_FILE, assertSynchronous, sessionWrites } from './open';
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
export type { RebuildResult } from './rebuild';
export { ROLLUP_MS, isMinuteFinal, minuteOf } from './rollup';
export { MIGRATIONS, SCHEMA_VERSION } from './schema';

/**
 * The collector's SQLite storage (one file, `<dataDir>/collector.db`), one part per file:
 *
 *   open.ts          the file, its modes, WAL + synchronous FULL (NORMAL for session writes)
 *   schema.ts        tables and migrations
 *   keys.ts          projects, access keys, revocation
 *   read-tokens.ts   read tokens of the HTTP API
 *   agents.ts        agents and their liveness (setAgentState, the one writer of state)
 *   metrics.ts       packs, points, rollups; metric-table.ts their statements; rollup.ts when a minute is final
 *   text-items.ts    traces, events, snapshots, active stacks, registrations
 *   queries.ts       what the API reads
 *   rebuild.ts       a damaged file rebuilt from its tables' rows (after a write fails with SQLITE_CORRUPT)
 *
 * Every write method is one IMMEDIATE transaction, committed before it returns, so an ack
 * sent after it never covers data that could be lost (agentSeen is the one exception: it is
 * throttled, see agents.ts). Session writes (agents' states and licenses, reaping) commit
 * without an fsync of their own (open.ts, sessionWrites); data, keys and tokens with one. An agent is (project, agent_id) in every table: the same
 * agent_id under two projects is two agents, with their own rows, packs, points and items.
 */

export interface SqliteStoreOptions extends OpenOptions {
  /** A minute is final this long after it ends; points for a final minute are dropped as late (default 120000). */
  rollupGraceMs?: number;
  /** agentSeen writes an agent's last_seen at most this often (the newer value is kept in memory meanwhile). */
  seenPersistMs?: number;
}

/** A rebuild that did not help is tried again at most this often (each one copies the whole file). */
const REPAIR_RETRY_MS = 60_000;

/** The parts that hold statements prepared on one open database (replaced together by repair()). */
interface Parts {
  db: Database.Database;
  /** The schema version the file had when opened (0: new). */
  from: number;
  tokens: ReadTokens;
  keys: KeyStore;
  agents: AgentStore;
  fleet: FleetStore;
  pruner: SqlitePruner;
  keyImport: SqliteKeyImport;
  metrics: MetricStore;
  text: TextStore;
  queries: Queries;
  session: SessionWrite;
}

export class SqliteStore {
  private p: Parts;
  private closed = false;
  private repairing = false;
  /** When the last rebuild was tried: one that failed (disk full, a damaged table) is not retried on every write. */
  private repairTriedAt = Number.NEGATIVE_INFINITY;
  /** Told after a write failed with SQLITE_CORRUPT and the file was rebuilt from its tables (or could not be). */
  onRepair: (r: RebuildResult | Error) => void = () => {};

  /** Open (creating if needed) `<dataDir>/collector.db`. Throws StoreOpenError, StoreCorruptError, StoreDurabilityError, StoreVersionError. */
  static open(dataDir: string, opts: SqliteStoreOptions = {}): SqliteStore {
    return new SqliteStore(SqliteStore.parts(dataDir, opts), opts, dataDir);
  }

  private static parts(dataDir: string, opts: SqliteStoreOptions): Parts {
    const { db, path } = openDatabaseFile(dataDir, opts);
    try {
      setDurability(db, opts.busyTimeoutMs);
      const from = migrate(db, path);
      secureFiles(path);
      const agents = new AgentStore(db, opts.seenPersistMs ?? 5000);
      return {
        db,
        from,
        tokens: new ReadTokens(db),
        keys: new KeyStore(db),
        agents,
        fleet: new FleetStore(db, agents),
        pruner: new SqlitePruner(db),
        keyImport: new SqliteKeyImport(db),
        metrics: new MetricStore(db, opts.rollupGraceMs ?? 120_000),
        text: new TextStore(db),
        queries: new Queries(db),
        session: sessionWrites(db),
      };
    } catch (err) {
      db.close();
      if (isCorruption(err)) throw new StoreCorruptError(path, errText(err));
      throw err;
    }
  }

  private constructor(
    parts: Parts,
    private readonly opts: SqliteStoreOptions,
    private readonly dataDir: string,
  ) {
    this.p = parts;
    this.path = openedPath(parts.db);
  }

  readonly path: string;

  /** The schema version the file had when this store opened it (0: a new file). */
  get openedAtVersion(): number {
    return this.p.from;
  }

  /** Read tokens of the HTTP API. */
  get tokens(): ReadTokens {
    return this.p.tokens;
  }
  private get keys(): KeyStore {
    return this.p.keys;
  }
  private get agents(): AgentStore {
    return this.p.agents;
  }
  private get metrics(): MetricStore {
    return this.p.metrics;
  }
  private get text(): TextStore {
    return this.p.text;
  }
  private get queries(): Queries {
    return this.p.queries;
  }

  /**
   * A write that failed with SQLITE_CORRUPT: the file has a damaged page, and every later write
   * to that table would fail too. Once the failed transaction is over (the next turn of the event
   * loop), the file is rebuilt from its tables' rows (rebuild.ts) and opened again. The write
   * itself still fails: what it carried was not acked and is sent again.
   */
  private guard<T>(write: () => T): T {
    try {
      return write();
    } catch (err) {
      if (isCorruption(err) && !this.repairing && !this.closed && Date.now() - this.repairTriedAt >= REPAIR_RETRY_MS) {
        this.repairing = true;
        this.repairTriedAt = Date.now();
        setImmediate(() => this.repair());
      }
      throw err;
    }
  }

  private repair(): void {
    if (this.closed) return;
    try {
      try {
        this.p.agents.flushSeen();
      } catch {
        // the damaged file may refuse it: last-seen times are written again as agents send
      }
      this.p.db.close();
      const r = rebuildFromTables(this.path);
      this.p = SqliteStore.parts(this.dataDir, this.opts);
      this.onRepair(r);
    } catch (err) {
      // The file could not be rebuilt: open it as it is, so what still works keeps working.
      try {
        if (!this.p.db.open) this.p = SqliteStore.parts(this.dataDir, this.opts);
      } catch {
        // nothing more to do here: writes keep failing, counted, not acked
      }
      this.onRepair(err as Error);
    } finally {
      this.repairing = false;
    }
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
  agentConnected(projectId: string, info: AgentInfo, at: number, collectorId: string | null = null): AgentStateChange | null {
    return this.guard(() => this.p.session(() => this.agents.agentConnected(projectId, info, at, collectorId)));
  }
  agentInfo(projectId: string, info: AgentInfo, at: number): void {
    this.guard(() => this.agents.agentInfo(projectId, info, at));
  }
  setAgentState(agent: AgentRef, to: AgentState, cause: StateCause, collectorId?: string): AgentStateChange | null {
    return this.guard(() => this.p.session(() => this.agents.setAgentState(agent, to, cause, collectorId)));
  }
  agentSeen(agent: AgentRef, at: number): void {
    this.guard(() => this.agents.agentSeen(agent, at));
  }
  agentLicensed(agent: AgentRef, licensed: boolean): void {
    this.guard(() => this.p.session(() => this.agents.agentLicensed(agent, licensed)));
  }
  /** Every session no live collector holds ends (`self`: the collector starting; deadAfterMs: how old a live heartbeat may be). */
  resetSessions(at: number, self = '', deadAfterMs = 0): number {
    return this.p.session(() => this.agents.resetSessions(self, at, deadAfterMs));
  }
  listAgents(q: { project?: string } = {}): AgentListRow[] {
    return this.agents.listAgents(q);
  }
  agentsByState(): Record<AgentState, number> {
    return this.agents.agentsByState();
  }

  // fleet.ts
  heartbeat(self: CollectorInfo, at: number): void {
    this.guard(() => this.p.fleet.heartbeat(self, at));
  }
  reapCollectors(at: number, deadAfterMs: number): ReapResult {
    return this.guard(() => this.p.session(() => this.p.fleet.reapCollectors(at, deadAfterMs)));
  }
  leave(self: CollectorInfo, at: number): void {
    this.guard(() => this.p.session(() => this.p.fleet.leave(self, at)));
  }
  listCollectors(): CollectorRow[] {
    return this.p.fleet.listCollectors();
  }
  licenseCapacity(): number {
    return this.p.fleet.licenseCapacity();
  }
  setLicenseCapacity(capacity: number): number | null {
    return this.guard(() => this.p.fleet.setLicenseCapacity(capacity));
  }
  acquireLicense(agent: AgentRef, at: number, releaseMs: number): LicenseGrant {
    return this.guard(() => this.p.session(() => this.p.fleet.acquireLicense(agent, at, releaseMs)));
  }
  connectAgent(projectId: string, info: AgentInfo, at: number, collectorId: string | null, releaseMs: number): AgentConnect {
    return this.guard(() => this.p.session(() => this.p.fleet.connectAgent(projectId, info, at, collectorId, releaseMs)));
  }
  releaseLicenses(at: number, releaseMs: number): AgentRef[] {
    return this.guard(() => this.p.session(() => this.p.fleet.releaseLicenses(at, releaseMs)));
  }

  // metrics.ts, text-items.ts
  storeMetrics(agent: AgentRef, packs: UpMetricPack[], now: number): StoreMetricsResult {
    return this.guard(() => this.metrics.storeMetrics(agent, packs, now));
  }
  storeText(agent: AgentRef, items: TextItem[]): StoreTextResult {
    return this.guard(() => this.text.storeText(agent, items));
  }

  // prune.ts
  /** At most maxRows rows older than `before` deleted, in one short transaction; returns how many. */
  prune(before: number, maxRows: number): number {
    return this.guard(() => this.p.pruner.prune(before, maxRows));
  }

  // key-import.ts
  importProject(projectId: string, name: string, createdAt: number): boolean {
    return this.p.keyImport.importProject(projectId, name, createdAt);
  }
  importKey(projectId: string, secret: Buffer, createdAt: number): boolean {
    return this.p.keyImport.importKey(projectId, secret, createdAt);
  }
  importToken(tokenId: string, projectId: string | null, hash: Buffer, createdAt: number): boolean {
    return this.p.keyImport.importToken(tokenId, projectId, hash, createdAt);
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
    return this.p.db.pragma(name, { simple: true });
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
      this.p.db.close();
    }
  }
}

function openedPath(db: Database.Database): string {
  return db.name;
}
