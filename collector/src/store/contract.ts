import type { AgentInfo, TextItem, UpMetricPack } from '@apm-sidecar/proto/upstream';
import type { AgentRef, AgentState, AgentStateChange, ProjectKey, StateCause, StoreMetricsResult, StoreTextResult } from '../types';
import type { AgentListRow } from './agents';
import type { KeyImport } from './copy-keys';
import type { CreatedKey, KeyRow } from './keys';
import type { BtRegistrationRow, EventRow, ListQuery, MetricQuery, MetricRow, SnapshotRow, TraceQuery, TraceRow } from './queries';
import type { ActiveToken, ReadTokenRow } from './read-tokens';

/**
 * What a collector needs from its store, whichever engine holds it (DESIGN §7, §11): SQLite in
 * one file for one machine (sqlite-store.ts over index.ts), PostgreSQL for several collectors
 * sharing one database (pg/). Both pass the same contract tests (test/unit/store-contract.test.ts).
 *
 * Every write resolves once it is committed: an ack sent after it never covers data that
 * could be lost (agentSeen is throttled, the one exception). Agent identity is (project, agent_id).
 *
 * Several collectors may share one store. Each registers itself (heartbeat) under a
 * collector id of its own; an agent's row names the collector holding its session, and a
 * change made by a session applies only while that collector still holds it, so a session
 * ended late on collector A never overwrites the newer one on collector B.
 */

export type StoreKind = 'sqlite' | 'postgres';

/** A running collector, as it registers itself. */
export interface CollectorInfo {
  /** Unique per process start. */
  readonly id: string;
  readonly host: string;
  readonly pid: number;
  /** The agents' TCP address and the HTTP address, for operators (host:port). */
  readonly agentsAddress: string;
  readonly httpAddress: string;
}

export interface CollectorRow extends CollectorInfo {
  startedAt: number;
  heartbeatAt: number;
  /** Agents whose session this collector holds. */
  agents: number;
}

/** What connectAgent did: the agent's state change (null when it was already live) and its license. */
export interface AgentConnect {
  change: AgentStateChange | null;
  license: LicenseGrant;
}

export interface LicenseGrant {
  granted: boolean;
  /** For people: 'license kept', 'license 2 of 5', 'all 5 licenses are in use', … */
  reason: string;
}

export interface RevokedKey {
  projectId: string;
  fingerprint: string;
  alreadyRevokedAt: number | null;
}

/** Agents whose collector stopped heartbeating, now disconnected. */
export interface ReapResult {
  collectors: string[];
  agents: AgentRef[];
}

export interface CollectorStore extends KeyImport {
  readonly kind: StoreKind;
  /** Where the data is, for logs and errors: a file path, or the URL without its password. */
  readonly location: string;

  // Projects and access keys (keys.ts).
  /** Every key of a project, revoked ones included (empty when the project is unknown). */
  projectKeys(projectId: string): Promise<ProjectKey[]>;
  /** Ids of every revoked key (polled: a revocation may come from another process). */
  revokedKeyIds(): Promise<number[]>;
  createKey(project: string, now?: number): Promise<CreatedKey>;
  revokeKey(fingerprint: string, now?: number): Promise<RevokedKey>;
  listKeys(): Promise<KeyRow[]>;
  // And importProject, importKey, importToken (copy-keys.ts): rows written as they are, for moving a collector's keys to another store.

  // Read tokens of the HTTP API (read-tokens.ts).
  createToken(projectId: string | null, now?: number): Promise<{ tokenId: string; token: string }>;
  listTokens(): Promise<ReadTokenRow[]>;
  activeTokens(): Promise<ActiveToken[]>;
  revokeToken(tokenId: string, now?: number): Promise<'revoked' | 'already' | 'unknown'>;

  // Collectors sharing the store.
  /** Register (first call) or refresh this collector's heartbeat. */
  heartbeat(self: CollectorInfo, at: number): Promise<void>;
  /**
   * Collectors whose heartbeat is older than `deadAfterMs` are removed, and the agents whose
   * session they held become 'disconnected' (cause: the collector stopped). Any collector may run it.
   */
  reapCollectors(at: number, deadAfterMs: number): Promise<ReapResult>;
  /** The collector `self` starts: agents whose session belongs to no live collector become disconnected. Returns how many. */
  resetSessions(self: CollectorInfo, at: number, deadAfterMs: number): Promise<number>;
  /** A collector stopping cleanly: its row goes, its agents become disconnected. */
  leave(self: CollectorInfo, at: number): Promise<void>;
  listCollectors(): Promise<CollectorRow[]>;

  // Agents and their liveness (agents.ts).
  /** An agent completed the handshake on collector `collectorId`: its info, state 'live', and the session is that collector's. */
  agentConnected(projectId: string, info: AgentInfo, at: number, collectorId: string): Promise<AgentStateChange | null>;
  /**
   * agentConnected, then acquireLicense, in one transaction: the handshake's one commit before
   * Config and License are sent.
   */
  connectAgent(projectId: string, info: AgentInfo, at: number, collectorId: string, releaseMs: number): Promise<AgentConnect>;
  /** An agent's info (host, version, apps) changed; its state does not. */
  agentInfo(projectId: string, info: AgentInfo, at: number): Promise<void>;
  /**
   * The one writer of an agent's state. With `collectorId`, the change applies only while that
   * collector holds the agent's session ('disconnected' also ends its hold).
   */
  setAgentState(agent: AgentRef, to: AgentState, cause: StateCause, collectorId?: string): Promise<AgentStateChange | null>;
  /** Throttled (written at most every few seconds per agent); the newest time is kept meanwhile. */
  agentSeen(agent: AgentRef, at: number): Promise<void>;
  listAgents(q?: { project?: string }): Promise<AgentListRow[]>;
  agentsByState(): Promise<Record<AgentState, number>>;

  // The one license pool of the store.
  /** Set the pool's size (0 = unlimited); returns the size it had (null: never set). */
  setLicenseCapacity(capacity: number): Promise<number | null>;
  licenseCapacity(): Promise<number>;
  /**
   * Take (or keep) a license for an agent that connected. Licenses of agents disconnected for
   * `releaseMs` or longer are freed first, so whichever collector asks sees the same pool.
   */
  acquireLicense(agent: AgentRef, at: number, releaseMs: number): Promise<LicenseGrant>;
  /** Free the licenses of agents disconnected for `releaseMs` or longer; returns those agents. */
  releaseLicenses(at: number, releaseMs: number): Promise<AgentRef[]>;
  /** Mark an agent (un)licensed without the pool's checks (an agent refused, a license given up). */
  agentLicensed(agent: AgentRef, licensed: boolean): Promise<void>;

  // Data (metrics.ts, text-items.ts).
  /** Idempotent by pack id per agent, across collectors; points merge into (agent, series, interval start). */
  storeMetrics(agent: AgentRef, packs: UpMetricPack[], now: number): Promise<StoreMetricsResult>;
  storeText(agent: AgentRef, items: TextItem[]): Promise<StoreTextResult>;
  /**
   * Delete at most `maxRows` stored rows (points, rollups, packs, traces, events, snapshots)
   * older than `before` (epoch ms); resolves to how many went. Called in batches so ingest never waits long.
   */
  prune(before: number, maxRows: number): Promise<number>;

  // What the API reads (queries.ts).
  queryMetrics(q?: MetricQuery): Promise<MetricRow[]>;
  listTraces(q?: TraceQuery): Promise<TraceRow[]>;
  listSnapshots(q?: ListQuery): Promise<SnapshotRow[]>;
  listEvents(q?: ListQuery): Promise<EventRow[]>;
  listBtRegistrations(q?: ListQuery): Promise<BtRegistrationRow[]>;
  counts(): Promise<Record<string, number>>;

  /** Write pending last-seen times and close. Safe to call twice. */
  close(): Promise<void>;
}
