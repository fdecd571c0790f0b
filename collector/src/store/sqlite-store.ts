import type { AgentInfo, TextItem, UpMetricPack } from '@apm-sidecar/proto/upstream';
import type { AgentRef, AgentState, AgentStateChange, ProjectKey, StateCause, StoreMetricsResult, StoreTextResult } from '../types';
import type { AgentListRow } from './agents';
import type { AgentConnect, CollectorInfo, CollectorRow, CollectorStore, LicenseGrant, ReapResult, RevokedKey } from './contract';
import { SqliteStore, type SqliteStoreOptions } from './index';
import type { KeyImport } from './copy-keys';
import type { CreatedKey, KeyRow } from './keys';
import type { BtRegistrationRow, EventRow, ListQuery, MetricQuery, MetricRow, SnapshotRow, TraceQuery, TraceRow } from './queries';
import type { ActiveToken, ReadTokenRow } from './read-tokens';

/**
 * The store contract on SQLite: SqliteStore's synchronous transactions, each resolved as it
 * commits. A call runs to its commit before it returns the promise, so calls made in order
 * commit in order, as they did before the contract was asynchronous.
 */
export class SqliteCollectorStore implements CollectorStore, KeyImport {
  readonly kind = 'sqlite' as const;

  constructor(readonly sqlite: SqliteStore) {}

  static open(dataDir: string, opts: SqliteStoreOptions = {}): SqliteCollectorStore {
    return new SqliteCollectorStore(SqliteStore.open(dataDir, opts));
  }

  get location(): string {
    return this.sqlite.path;
  }

  async projectKeys(projectId: string): Promise<ProjectKey[]> {
    return this.sqlite.projectKeys(projectId);
  }
  async revokedKeyIds(): Promise<number[]> {
    return this.sqlite.revokedKeyIds();
  }
  async createKey(project: string, now?: number): Promise<CreatedKey> {
    return this.sqlite.createKey(project, now);
  }
  async revokeKey(fingerprint: string, now?: number): Promise<RevokedKey> {
    return this.sqlite.revokeKey(fingerprint, now);
  }
  async listKeys(): Promise<KeyRow[]> {
    return this.sqlite.listKeys();
  }

  async createToken(projectId: string | null, now?: number): Promise<{ tokenId: string; token: string }> {
    return this.sqlite.tokens.create(projectId, now);
  }
  async listTokens(): Promise<ReadTokenRow[]> {
    return this.sqlite.tokens.list();
  }
  async activeTokens(): Promise<ActiveToken[]> {
    return this.sqlite.tokens.active();
  }
  async revokeToken(tokenId: string, now?: number): Promise<'revoked' | 'already' | 'unknown'> {
    return this.sqlite.tokens.revoke(tokenId, now);
  }

  async heartbeat(self: CollectorInfo, at: number): Promise<void> {
    this.sqlite.heartbeat(self, at);
  }
  async reapCollectors(at: number, deadAfterMs: number): Promise<ReapResult> {
    return this.sqlite.reapCollectors(at, deadAfterMs);
  }
  async resetSessions(self: CollectorInfo, at: number, deadAfterMs: number): Promise<number> {
    return this.sqlite.resetSessions(at, self.id, deadAfterMs);
  }
  async leave(self: CollectorInfo, at: number): Promise<void> {
    this.sqlite.leave(self, at);
  }
  async listCollectors(): Promise<CollectorRow[]> {
    return this.sqlite.listCollectors();
  }

  async agentConnected(projectId: string, info: AgentInfo, at: number, collectorId: string): Promise<AgentStateChange | null> {
    return this.sqlite.agentConnected(projectId, info, at, collectorId);
  }
  async connectAgent(projectId: string, info: AgentInfo, at: number, collectorId: string, releaseMs: number): Promise<AgentConnect> {
    return this.sqlite.connectAgent(projectId, info, at, collectorId, releaseMs);
  }
  async agentInfo(projectId: string, info: AgentInfo, at: number): Promise<void> {
    this.sqlite.agentInfo(projectId, info, at);
  }
  async setAgentState(agent: AgentRef, to: AgentState, cause: StateCause, collectorId?: string): Promise<AgentStateChange | null> {
    return this.sqlite.setAgentState(agent, to, cause, collectorId);
  }
  async agentSeen(agent: AgentRef, at: number): Promise<void> {
    this.sqlite.agentSeen(agent, at);
  }
  async listAgents(q: { project?: string } = {}): Promise<AgentListRow[]> {
    return this.sqlite.listAgents(q);
  }
  async agentsByState(): Promise<Record<AgentState, number>> {
    return this.sqlite.agentsByState();
  }

  async setLicenseCapacity(capacity: number): Promise<number | null> {
    return this.sqlite.setLicenseCapacity(capacity);
  }
  async licenseCapacity(): Promise<number> {
    return this.sqlite.licenseCapacity();
  }
  async acquireLicense(agent: AgentRef, at: number, releaseMs: number): Promise<LicenseGrant> {
    return this.sqlite.acquireLicense(agent, at, releaseMs);
  }
  async releaseLicenses(at: number, releaseMs: number): Promise<AgentRef[]> {
    return this.sqlite.releaseLicenses(at, releaseMs);
  }
  async agentLicensed(agent: AgentRef, licensed: boolean): Promise<void> {
    this.sqlite.agentLicensed(agent, licensed);
  }

  async storeMetrics(agent: AgentRef, packs: UpMetricPack[], now: number): Promise<StoreMetricsResult> {
    return this.sqlite.storeMetrics(agent, packs, now);
  }
  async storeText(agent: AgentRef, items: TextItem[]): Promise<StoreTextResult> {
    return this.sqlite.storeText(agent, items);
  }
  async prune(before: number, maxRows: number): Promise<number> {
    return this.sqlite.prune(before, maxRows);
  }

  async importProject(projectId: string, name: string, createdAt: number): Promise<boolean> {
    return this.sqlite.importProject(projectId, name, createdAt);
  }
  async importKey(projectId: string, secret: Buffer, createdAt: number): Promise<boolean> {
    return this.sqlite.importKey(projectId, secret, createdAt);
  }
  async importToken(tokenId: string, projectId: string | null, hash: Buffer, createdAt: number): Promise<boolean> {
    return this.sqlite.importToken(tokenId, projectId, hash, createdAt);
  }

  async queryMetrics(q?: MetricQuery): Promise<MetricRow[]> {
    return this.sqlite.queryMetrics(q);
  }
  async listTraces(q?: TraceQuery): Promise<TraceRow[]> {
    return this.sqlite.listTraces(q);
  }
  async listSnapshots(q?: ListQuery): Promise<SnapshotRow[]> {
    return this.sqlite.listSnapshots(q);
  }
  async listEvents(q?: ListQuery): Promise<EventRow[]> {
    return this.sqlite.listEvents(q);
  }
  async listBtRegistrations(q?: ListQuery): Promise<BtRegistrationRow[]> {
    return this.sqlite.listBtRegistrations(q);
  }
  async counts(): Promise<Record<string, number>> {
    return this.sqlite.counts();
  }

  async close(): Promise<void> {
    this.sqlite.close();
  }
}
