import { Client, type Pool } from 'pg';
import type { AgentInfo, TextItem, UpMetricPack } from '@apm-sidecar/proto/upstream';
import type { AgentRef, AgentState, AgentStateChange, ProjectKey, StateCause, StoreMetricsResult, StoreTextResult } from '../../types';
import type { AgentListRow } from '../agents';
import type { AgentConnect, CollectorInfo, CollectorRow, CollectorStore, LicenseGrant, ReapResult, RevokedKey } from '../contract';
import type { CreatedKey, KeyRow } from '../keys';
import type { BtRegistrationRow, EventRow, ListQuery, MetricQuery, MetricRow, SnapshotRow, TraceQuery, TraceRow } from '../queries';
import type { ActiveToken, ReadTokenRow } from '../read-tokens';
import { PgAgentStore } from './agents';
import { PgCollectors } from './collectors';
import { connectionConfig, createPool, storeError } from './connect';
import { PgKeys } from './keys';
import { PgLicenses, acquireIn } from './licenses';
import { PgMetricStore } from './metrics';
import { PgPruner } from './prune';
import { PgQueries } from './queries';
import { checkSchema, migrate } from './schema';
import { LICENSE_LOCK, inTransaction } from './tx';
import { PgTextStore } from './text-items';
import { type PgTarget, parsePostgresUrl } from './url';

export { PG_SCHEMA_VERSION } from './schema';
export { isPostgresUrl, parsePostgresUrl } from './url';

/**
 * The collector's store on PostgreSQL (DESIGN §11), for several collectors sharing one database:
 *
 *   url.ts          the --store URL (no password in it)
 *   connect.ts      the pool, and connection failures as typed errors
 *   schema.ts       migrations (schema_version), applied only by `apm-collector migrate`
 *   keys.ts         projects, access keys, read tokens
 *   agents.ts       agents, liveness, the collector holding each session
 *   collectors.ts   collectors' heartbeats, reaping the dead ones
 *   licenses.ts     the one license pool
 *   metrics.ts, text-items.ts, queries.ts, prune.ts   the data (schema-data.ts)
 *
 * Every write resolves once committed (agentSeen, throttled, is the one exception); a write
 * that fails rejects, and the collector refuses what it carried without acking it.
 */

export interface PostgresStoreOptions {
  /** A minute is final this long after it ends (default 120000). */
  rollupGraceMs?: number;
  /** agentSeen writes an agent's last_seen at most this often (default 5000). */
  seenPersistMs?: number;
  /** Connections to the database, at most (default 10). */
  poolSize?: number;
  /** A connection not established within this long fails (default 10000). */
  connectTimeoutMs?: number;
}

/** The store URL for logs: its location when it parses, else the text with any password masked. */
export function redactedUrl(url: string): string {
  try {
    return parsePostgresUrl(url).location;
  } catch {
    return url.replace(/^([a-z]+:\/\/[^:@/]*):[^@/]*@/i, '$1:***@');
  }
}

/** Apply the schema's pending migrations (`apm-collector migrate --store URL`); safe to run from several places at once. */
export async function migratePostgres(url: string, opts: { connectTimeoutMs?: number } = {}): Promise<{ from: number; to: number }> {
  const t = parsePostgresUrl(url);
  const c = new Client(connectionConfig(t, 'apm-collector migrate', opts.connectTimeoutMs));
  c.on('error', () => {});
  try {
    await c.connect();
    return await migrate(c, t.location);
  } catch (err) {
    throw storeError(t, err);
  } finally {
    await c.end().catch(() => {});
  }
}

export class PostgresStore implements CollectorStore {
  readonly kind = 'postgres' as const;
  readonly location: string;
  /** Told when a connection of the pool fails outside a query (the query running on it, if any, rejects by itself). */
  onError: (err: Error) => void = () => {};
  private closed: Promise<void> | undefined;
  private readonly keys: PgKeys;
  private readonly agents: PgAgentStore;
  private readonly collectors: PgCollectors;
  private readonly licenses: PgLicenses;
  private readonly metrics: PgMetricStore;
  private readonly text: PgTextStore;
  private readonly queries: PgQueries;
  private readonly pruner: PgPruner;

  /**
   * Connect to the database of `url` and check its schema. Throws StoreUrlError,
   * StoreUnavailableError, StoreAuthError, StoreNotMigratedError (run `apm-collector migrate`), StoreVersionError.
   */
  static async open(url: string, opts: PostgresStoreOptions = {}): Promise<PostgresStore> {
    const t = parsePostgresUrl(url);
    const holder: { store?: PostgresStore } = {};
    const pool = createPool(t, { max: opts.poolSize ?? 10, connectTimeoutMs: opts.connectTimeoutMs }, (err) => holder.store?.onError(err));
    try {
      const c = await pool.connect();
      try {
        await checkSchema(c, t.location);
      } finally {
        c.release();
      }
    } catch (err) {
      await pool.end().catch(() => {});
      throw storeError(t, err);
    }
    holder.store = new PostgresStore(pool, t, opts);
    return holder.store;
  }

  private constructor(
    private readonly pool: Pool,
    target: PgTarget,
    opts: PostgresStoreOptions,
  ) {
    this.location = target.location;
    this.keys = new PgKeys(pool);
    this.agents = new PgAgentStore(pool, opts.seenPersistMs ?? 5000);
    this.collectors = new PgCollectors(pool);
    this.licenses = new PgLicenses(pool);
    this.metrics = new PgMetricStore(pool, opts.rollupGraceMs ?? 120_000);
    this.text = new PgTextStore(pool);
    this.queries = new PgQueries(pool);
    this.pruner = new PgPruner(pool);
  }

  // Keys and tokens (keys.ts)
  importProject(projectId: string, name: string, createdAt: number): Promise<boolean> {
    return this.keys.importProject(projectId, name, createdAt);
  }
  importKey(projectId: string, secret: Buffer, createdAt: number): Promise<boolean> {
    return this.keys.importKey(projectId, secret, createdAt);
  }
  importToken(tokenId: string, projectId: string | null, hash: Buffer, createdAt: number): Promise<boolean> {
    return this.keys.importToken(tokenId, projectId, hash, createdAt);
  }
  projectKeys(projectId: string): Promise<ProjectKey[]> {
    return this.keys.projectKeys(projectId);
  }
  revokedKeyIds(): Promise<number[]> {
    return this.keys.revokedKeyIds();
  }
  createKey(project: string, now = Date.now()): Promise<CreatedKey> {
    return this.keys.createKey(project, now);
  }
  revokeKey(fingerprint: string, now = Date.now()): Promise<RevokedKey> {
    return this.keys.revokeKey(fingerprint, now);
  }
  listKeys(): Promise<KeyRow[]> {
    return this.keys.listKeys();
  }
  createToken(projectId: string | null, now = Date.now()): Promise<{ tokenId: string; token: string }> {
    return this.keys.createToken(projectId, now);
  }
  listTokens(): Promise<ReadTokenRow[]> {
    return this.keys.listTokens();
  }
  activeTokens(): Promise<ActiveToken[]> {
    return this.keys.activeTokens();
  }
  revokeToken(tokenId: string, now = Date.now()): Promise<'revoked' | 'already' | 'unknown'> {
    return this.keys.revokeToken(tokenId, now);
  }

  // Collectors (collectors.ts)
  heartbeat(self: CollectorInfo, at: number): Promise<void> {
    return this.collectors.heartbeat(self, at);
  }
  reapCollectors(at: number, deadAfterMs: number): Promise<ReapResult> {
    return this.collectors.reapCollectors(at, deadAfterMs);
  }
  resetSessions(self: CollectorInfo, at: number, deadAfterMs: number): Promise<number> {
    return this.collectors.resetSessions(self, at, deadAfterMs);
  }
  leave(self: CollectorInfo, at: number): Promise<void> {
    return this.collectors.leave(self, at);
  }
  listCollectors(): Promise<CollectorRow[]> {
    return this.collectors.listCollectors();
  }

  // Agents (agents.ts)
  agentConnected(projectId: string, info: AgentInfo, at: number, collectorId: string): Promise<AgentStateChange | null> {
    return this.agents.agentConnected(projectId, info, at, collectorId);
  }
  /** One transaction under the license pool's lock: the agent's row and state, then its license. */
  connectAgent(projectId: string, info: AgentInfo, at: number, collectorId: string, releaseMs: number): Promise<AgentConnect> {
    return inTransaction(
      this.pool,
      async (c) => {
        const change = await this.agents.connectedIn(c, projectId, info, at, collectorId);
        return { change, license: await acquireIn(c, { projectId, agentId: info.agentId }, at, releaseMs) };
      },
      LICENSE_LOCK,
    );
  }
  agentInfo(projectId: string, info: AgentInfo, at: number): Promise<void> {
    return this.agents.agentInfo(projectId, info, at);
  }
  setAgentState(agent: AgentRef, to: AgentState, cause: StateCause, collectorId?: string): Promise<AgentStateChange | null> {
    return this.agents.setAgentState(agent, to, cause, collectorId);
  }
  agentSeen(agent: AgentRef, at: number): Promise<void> {
    return this.agents.agentSeen(agent, at);
  }
  listAgents(q: { project?: string } = {}): Promise<AgentListRow[]> {
    return this.agents.listAgents(q);
  }
  agentsByState(): Promise<Record<AgentState, number>> {
    return this.agents.agentsByState();
  }

  // Licenses (licenses.ts)
  setLicenseCapacity(capacity: number): Promise<number | null> {
    return this.licenses.setLicenseCapacity(capacity);
  }
  licenseCapacity(): Promise<number> {
    return this.licenses.licenseCapacity();
  }
  acquireLicense(agent: AgentRef, at: number, releaseMs: number): Promise<LicenseGrant> {
    return this.licenses.acquireLicense(agent, at, releaseMs);
  }
  releaseLicenses(at: number, releaseMs: number): Promise<AgentRef[]> {
    return this.licenses.releaseLicenses(at, releaseMs);
  }
  agentLicensed(agent: AgentRef, licensed: boolean): Promise<void> {
    return this.licenses.agentLicensed(agent, licensed);
  }

  // Data (metrics.ts, text-items.ts, prune.ts, queries.ts)
  storeMetrics(agent: AgentRef, packs: UpMetricPack[], now: number): Promise<StoreMetricsResult> {
    return this.metrics.storeMetrics(agent, packs, now);
  }
  storeText(agent: AgentRef, items: TextItem[]): Promise<StoreTextResult> {
    return this.text.storeText(agent, items);
  }
  prune(before: number, maxRows: number): Promise<number> {
    return this.pruner.prune(before, maxRows);
  }
  queryMetrics(q: MetricQuery = {}): Promise<MetricRow[]> {
    return this.queries.queryMetrics(q);
  }
  listTraces(q: TraceQuery = {}): Promise<TraceRow[]> {
    return this.queries.listTraces(q);
  }
  listSnapshots(q: ListQuery = {}): Promise<SnapshotRow[]> {
    return this.queries.listSnapshots(q);
  }
  listEvents(q: ListQuery = {}): Promise<EventRow[]> {
    return this.queries.listEvents(q);
  }
  listBtRegistrations(q: ListQuery = {}): Promise<BtRegistrationRow[]> {
    return this.queries.listBtRegistrations(q);
  }
  counts(): Promise<Record<string, number>> {
    return this.queries.counts();
  }

  /** Write pending last-seen times and close the pool. Safe to call twice. */
  close(): Promise<void> {
    this.closed ??= (async () => {
      try {
        await this.agents.flushSeen();
      } finally {
        await this.pool.end();
      }
    })();
    return this.closed;
  }
}
