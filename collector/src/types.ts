import type { AgentInfo, TextItem, UpMetricPack } from '@apm-sidecar/proto/upstream';

/** Liveness of an agent as the API reports it (DESIGN §7). */
export type AgentState = 'live' | 'stalled' | 'disconnected';

export interface AgentRow {
  agentId: string;
  projectId: string;
  app: string;
  host: string;
  state: AgentState;
  lastSeenAt: number;
  licensed: boolean;
}

export interface StoreMetricsResult {
  /** Points merged into storage. */
  stored: number;
  /** Packs already stored before (ignored, still acked). */
  duplicatePacks: number;
  /** Points for a minute already final, dropped and counted (still acked). */
  late: number;
}

/** Counters behind GET /api/stats and /metrics. */
export class CollectorStats {
  readonly received = { metricPoints: 0, traces: 0, events: 0, snapshots: 0, btRegistrations: 0, activeStacks: 0 };
  droppedLate = 0;
  readonly rejected = { badKey: 0, replay: 0, tampered: 0, tooLarge: 0, malformed: 0, frameGap: 0, handshakeTimeout: 0, tooManyConnections: 0 };
  readonly sessions = { tcp: 0, http: 0 };
  readonly frames: Record<string, number> = {};
  duplicatePacks = 0;

  toJSON(): unknown {
    return {
      received: this.received,
      droppedLate: this.droppedLate,
      rejected: this.rejected,
      duplicatePacks: this.duplicatePacks,
      sessions: this.sessions,
      frames: this.frames,
    };
  }
}

export interface StoreTextResult {
  traces: number;
  activeStacks: number;
  events: number;
  snapshots: number;
  /** Registrations not seen before for this agent. */
  btRegistrations: number;
  /** Registrations already stored (ignored). */
  btDuplicates: number;
}

/** What the agent protocol code needs from storage. Every write is one transaction, committed before it returns. */
export interface CollectorStore {
  /** The secret of a project's access key, or undefined when unknown. */
  keySecret(projectId: string): Buffer | undefined;
  /** An agent completed the handshake; keeps its identity (and row) if it was seen before. */
  agentConnected(projectId: string, info: AgentInfo, at: number): void;
  agentState(agentId: string, state: AgentState, at: number): void;
  agentSeen(agentId: string, at: number): void;
  agentLicensed(agentId: string, licensed: boolean): void;
  /** Idempotent by pack id per agent; points merge into (agent, series, interval start). */
  storeMetrics(agentId: string, packs: UpMetricPack[], now: number): StoreMetricsResult;
  storeText(agentId: string, items: TextItem[]): StoreTextResult;
}
