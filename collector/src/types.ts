/**
 * An agent's identity: the project whose key it proved, and the `agent_id` it gave.
 * Two projects may use the same agent_id; they are two agents.
 */
export interface AgentRef {
  readonly projectId: string;
  readonly agentId: string;
}

/** One string per agent identity, for maps. A project id never contains '/' (a-z, 0-9, '-'). */
export function agentKey(ref: AgentRef): string {
  return `${ref.projectId}/${ref.agentId}`;
}

/** Liveness of an agent as the API reports it (DESIGN §7). */
export type AgentState = 'live' | 'stalled' | 'disconnected';

/** Why an agent's state changes, and when (epoch ms). */
export interface StateCause {
  readonly at: number;
  /** For people: the log says it next to `from → to`. */
  readonly reason: string;
}

/** A change of an agent's state; null where a write changed nothing. */
export interface AgentStateChange {
  readonly from: AgentState;
  readonly to: AgentState;
}

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
  /** unauthorized, protectedMode and forbidden count refused HTTP API requests (api-access.ts). */
  readonly rejected = {
    badKey: 0,
    replay: 0,
    tampered: 0,
    tooLarge: 0,
    malformed: 0,
    frameGap: 0,
    handshakeTimeout: 0,
    /** Sessions refused because a batch (or the agent's own row) could not be committed: nothing of it was acked. */
    storeFailed: 0,
    tooManyConnections: 0,
    unauthorized: 0,
    protectedMode: 0,
    forbidden: 0,
    /** HTTP requests node:http refused before a route saw them: malformed, headers over http_max_header_bytes, too slow. */
    badHttp: 0,
    headersTooLarge: 0,
    httpTimeout: 0,
  };
  readonly sessions = { tcp: 0, http: 0 };
  readonly frames: Record<string, number> = {};
  duplicatePacks = 0;
  /** Writes of an agent's state or license that failed (the store could not take them); the next change writes again. */
  storeErrors = 0;
  /** The pruner's runs, the rows it deleted (older than store_retention_days) and its failed runs (store-pruner.ts). */
  readonly pruned = { runs: 0, rows: 0, errors: 0 };

  toJSON(): unknown {
    return {
      received: this.received,
      droppedLate: this.droppedLate,
      rejected: this.rejected,
      storeErrors: this.storeErrors,
      pruned: this.pruned,
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

/** One access key of a project, as the handshake needs it. */
export interface ProjectKey {
  /** The key's row id: sessions remember it, so revoking the key can end them. */
  id: number;
  secret: Buffer;
  /** Epoch ms, or null while the key is valid. */
  revokedAt: number | null;
}

export type { CollectorStore } from './store/contract';
