import { randomBytes } from 'node:crypto';
import { type Server, createServer } from 'node:net';
import { hostname } from 'node:os';
import { type ApmError, type Series, TooManyConnectionsError } from '@apm-sidecar/proto';
import type { AgentInfo } from '@apm-sidecar/proto/upstream';
import type { Logger } from 'pino';
import { AgentConnection, type AgentLink, type ConnectionHost, type RejectReason, type Wire, refusalFrame, remoteIp } from './agent-connection';
import { type Clock, systemClock } from './clock';
import { StoreWriteError } from './errors';
import type { AgentConnect, CollectorInfo } from './store/contract';
import { type AgentRef, type AgentState, type AgentStateChange, type CollectorStats, type CollectorStore, agentKey } from './types';

export interface AgentServerOptions {
  host: string;
  port: number;
  store: CollectorStore;
  stats: CollectorStats;
  log: Logger;
  /** The size of the store's license pool (0 = unlimited), written to the store at start; undefined: as the store has it. */
  licenses?: number;
  idlePingMs: number;
  stallAfterMs: number;
  licenseReleaseMs: number;
  maxFrameBytes: number;
  /** A connection not through the handshake (configuration sent) this long is closed. */
  handshakeTimeoutMs: number;
  /** Connections (TCP and tunnel sessions) held at once; more are refused at accept. */
  maxConnections: number;
  /** The same, from one remote address. */
  maxConnectionsPerIp: number;
  /** Announced in the agent configuration: tunnel agents poll well within it. */
  tunnelSessionTimeoutMs?: number;
  /** How often the store's revoked keys are read, so a revoked key's sessions end (default 250). */
  keyPollMs?: number;
  /** The time of liveness, handshake deadlines and license release (default: the system clock). */
  clock?: Clock;
  /** This collector's heartbeat in the store, and when another collector counts as dead (defaults 5000, 15000). */
  heartbeatMs?: number;
  deadAfterMs?: number;
  /** The HTTP address, as the store's list of collectors shows it. */
  httpAddress?: string;
}

export interface AgentServer {
  readonly port: number;
  /** The clock of the agents' timeline, shared by their carriers (the HTTP tunnel). */
  readonly clock: Clock;
  /**
   * Serve an agent over a carrier (a TCP socket, or a tunnel session). Null when a connection
   * limit refused it (counted as rejected.tooManyConnections); the caller closes the carrier.
   */
  attach(wire: Wire, transport: 'tcp' | 'http'): AgentLink | null;
  /** Count and log a refusal made by a carrier before any connection exists (the tunnel's first request). */
  refused(reason: RejectReason, err: ApmError, remote: string | undefined): void;
  close(): Promise<void>;
}

const SERIES_CACHE_MAX = 200_000;

/**
 * The agents' side of the collector: accepts TCP connections (and tunnel sessions handed in
 * through attach), holds the connection limits, keeps one connection per agent (a newer one
 * replaces the older), writes every change of an agent's state, hands out licenses, and ends
 * the sessions of revoked keys. Each connection's protocol is in agent-connection.ts.
 */
class AgentServerImpl implements AgentServer, ConnectionHost {
  readonly seriesCache = new Map<string, Series>();
  readonly log: Logger;
  readonly collectorId = randomBytes(8).toString('hex');
  private self: CollectorInfo;
  private beatTimer: unknown = null;
  /** A release check per agent disconnected here, due license_release_ms after the disconnection. */
  private readonly releaseTimers = new Map<string, unknown>();
  private revokedPolling = false;
  readonly clock: Clock;
  private readonly conns = new Set<AgentConnection>();
  /** Every connection not closed yet, including those being replaced or ended: close() waits for them. */
  private readonly open = new Set<AgentConnection>();
  private onDrained: (() => void) | null = null;
  private readonly keyPoll: NodeJS.Timeout;
  /** Connections held (until closed, also while being replaced), in total and per remote address. */
  private held = 0;
  private readonly heldByIp = new Map<string, number>();
  /** Refusals of unauthenticated peers, by code: logged at most once a second, with how many were not. */
  private readonly refusalLog = new Map<string, { at: number; suppressed: number }>();
  private server: Server | null = null;
  /** State changes the store could not write, per agent (the newest), written again later. */
  private readonly unwrittenStates = new Map<string, { agent: AgentRef; to: AgentState; reason: string; at: number }>();
  port = 0;

  constructor(readonly opts: AgentServerOptions) {
    this.log = opts.log;
    this.clock = opts.clock ?? systemClock;
    this.self = {
      id: this.collectorId,
      host: hostname(),
      pid: process.pid,
      agentsAddress: `${opts.host}:${opts.port}`,
      httpAddress: opts.httpAddress ?? '',
    };
    // A key may be revoked by another process (the CLI) on the same store: poll its revocations.
    this.keyPoll = setInterval(() => this.endRevokedSessions(), Math.max(10, opts.keyPollMs ?? 250));
    this.keyPoll.unref();
  }

  /** End every session (or handshake in progress) that proved a key revoked since. */
  private endRevokedSessions(): void {
    this.writeUnwrittenStates();
    if (this.revokedPolling) return;
    this.revokedPolling = true;
    this.opts.store
      .revokedKeyIds()
      .then((ids) => {
        if (ids.length === 0) return;
        const revoked = new Set(ids);
        for (const c of this.conns) {
          if (c.keyId === null || !revoked.has(c.keyId)) continue;
          this.conns.delete(c);
          this.log.warn({ agentId: c.agent.agentId, projectId: c.agent.projectId }, 'access key revoked: session ended');
          // When it closes (at once, or 200 ms later at most) the agent is marked disconnected.
          c.end('ERR_KEY_REVOKED', 'the access key of this session was revoked');
        }
      })
      .catch((err: unknown) => this.log.error({ err }, 'cannot read revoked keys'))
      .finally(() => {
        this.revokedPolling = false;
      });
  }

  /**
   * Joining the store's collectors: the first heartbeat, the sessions no live collector holds
   * ended, and the license pool's size written when this collector was given one.
   */
  async join(): Promise<void> {
    const o = this.opts;
    this.self = { ...this.self, agentsAddress: `${o.host}:${this.port}` };
    const now = this.clock.now();
    try {
      await o.store.heartbeat(this.self, now);
      const reset = await o.store.resetSessions(this.self, now, this.deadAfterMs);
      if (reset > 0) this.log.info({ agents: reset }, 'agents whose session no running collector holds marked disconnected');
    } catch (err) {
      // A full disk at start must not keep the collector down: the next heartbeat tries again.
      this.storeFailed("the collector's registration", err);
    }
    if (o.licenses !== undefined) {
      try {
        const before = await o.store.setLicenseCapacity(o.licenses);
        if (before !== null && before !== o.licenses) this.log.warn({ from: before, to: o.licenses }, 'license pool resized for every collector of this store');
      } catch (err) {
        this.storeFailed('the size of the license pool', err);
      }
    }
    this.scheduleBeat();
  }

  private get deadAfterMs(): number {
    return this.opts.deadAfterMs ?? 15_000;
  }

  private scheduleBeat(): void {
    this.beatTimer = this.clock.setTimeout(() => {
      this.beatTimer = null;
      this.beat().finally(() => {
        if (!this.closing) this.scheduleBeat();
      });
    }, this.opts.heartbeatMs ?? 5000);
  }

  /** The heartbeat: this collector is alive; collectors that stopped beating are reaped; licenses due are freed. */
  private async beat(): Promise<void> {
    const o = this.opts;
    const now = this.clock.now();
    try {
      await o.store.heartbeat(this.self, now);
      const reaped = await o.store.reapCollectors(now, this.deadAfterMs);
      for (const id of reaped.collectors)
        this.log.warn({ collector: id, agents: reaped.agents.length }, `collector ${id} stopped heartbeating: its agents are disconnected`);
      this.logReleased(await o.store.releaseLicenses(now, o.licenseReleaseMs));
    } catch (err) {
      this.storeFailed("the collector's heartbeat", err);
    }
  }

  private logReleased(agents: AgentRef[]): void {
    for (const a of agents)
      this.log.info({ agentId: a.agentId, projectId: a.projectId }, `license released after ${this.opts.licenseReleaseMs} ms disconnected`);
  }

  connectAgent(projectId: string, info: AgentInfo, at: number): Promise<AgentConnect> {
    const key = agentKey({ projectId, agentId: info.agentId });
    const t = this.releaseTimers.get(key);
    if (t !== undefined) this.clock.clearTimeout(t);
    this.releaseTimers.delete(key);
    return this.opts.store.connectAgent(projectId, info, at, this.collectorId, this.opts.licenseReleaseMs);
  }

  /** The license of an agent disconnected here is freed license_release_ms later unless it came back (checked by the store). */
  private releaseLater(agent: AgentRef): void {
    const key = agentKey(agent);
    const old = this.releaseTimers.get(key);
    if (old !== undefined) this.clock.clearTimeout(old);
    const o = this.opts;
    this.releaseTimers.set(
      key,
      this.clock.setTimeout(() => {
        this.releaseTimers.delete(key);
        o.store.releaseLicenses(this.clock.now(), o.licenseReleaseMs).then(
          (agents) => this.logReleased(agents),
          (err: unknown) => this.storeFailed(`the license release of agent ${agent.agentId}`, err),
        );
      }, o.licenseReleaseMs),
    );
  }

  listen(): Promise<void> {
    const server = createServer((socket) => {
      socket.setNoDelay(true);
      if (this.attach(socket, 'tcp') !== null) return;
      // Refused at accept: the reason in clear text, then gone (the connection is not held meanwhile).
      socket.on('error', () => {});
      socket.end(refusalFrame('ERR_TOO_MANY_CONNECTIONS', 'the collector holds as many agent connections as it allows'), () => socket.destroy());
      setTimeout(() => socket.destroy(), 1000).unref();
    });
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.opts.port, this.opts.host, () => {
        server.off('error', reject);
        const a = server.address();
        this.port = typeof a === 'object' && a !== null ? a.port : this.opts.port;
        resolve();
      });
    });
  }

  attach(wire: Wire, transport: 'tcp' | 'http'): AgentLink | null {
    const ip = remoteIp(wire);
    const fromIp = this.heldByIp.get(ip) ?? 0;
    const o = this.opts;
    if (this.held >= o.maxConnections || fromIp >= o.maxConnectionsPerIp) {
      const limit = this.held >= o.maxConnections ? o.maxConnections : o.maxConnectionsPerIp;
      this.refused('tooManyConnections', new TooManyConnectionsError(limit), wire.remoteAddress);
      return null;
    }
    if (this.seriesCache.size > SERIES_CACHE_MAX) this.seriesCache.clear();
    this.held++;
    this.heldByIp.set(ip, fromIp + 1);
    const c = new AgentConnection(wire, this, transport);
    this.conns.add(c);
    this.open.add(c);
    return c;
  }

  refused(reason: RejectReason, err: ApmError, remote: string | undefined): void {
    this.opts.stats.rejected[reason]++;
    this.warnLimited(err.code, { code: err.code, reason, remote }, `refused agent connection: ${err.message}`);
  }

  /** A flood of refusals must not become a flood of log lines: per code, one line a second at most. */
  warnLimited(code: string, fields: Record<string, unknown>, message: string): void {
    const now = this.clock.now();
    const last = this.refusalLog.get(code);
    if (last !== undefined && now - last.at < 1000) {
      last.suppressed++;
      return;
    }
    const suppressed = last?.suppressed ?? 0;
    this.log.warn(suppressed > 0 ? { ...fields, suppressed } : fields, message);
    this.refusalLog.set(code, { at: now, suppressed: 0 });
  }

  /**
   * Every change of an agent's state goes through the store's one writer, setAgentState,
   * from here; each change is logged (debug) as from → to with its cause.
   */
  setAgentState(agent: AgentRef, to: AgentState, reason: string, at: number): void {
    const key = agentKey(agent);
    this.opts.store.setAgentState(agent, to, { at, reason }, this.collectorId).then(
      (change) => {
        this.unwrittenStates.delete(key);
        this.logState(agent, change, reason);
      },
      (err: unknown) => {
        // The store cannot take it now (disk full, I/O error): kept, and written when it can be.
        this.unwrittenStates.set(key, { agent, to, reason, at });
        this.storeFailed(`the state of agent ${agent.agentId}`, err);
      },
    );
  }

  /**
   * Agents' state changes the store could not take, written again on the key poll. One that a
   * connection of the agent has since overtaken (its connect wrote 'live') is given up.
   */
  private writeUnwrittenStates(): void {
    // One at a time: a write that fails again is kept for the next poll.
    const first = this.unwrittenStates.entries().next();
    if (first.done === true) return;
    const [key, u] = first.value;
    this.unwrittenStates.delete(key);
    if ([...this.conns].some((c) => c.holdsSession && c.agentKey === key)) return;
    this.setAgentState(u.agent, u.to, u.reason, u.at);
  }

  /** A write beside the data path (an agent's state or license) failed: counted, logged rate-limited; the collector carries on. */
  private storeFailed(what: string, err: unknown): void {
    this.opts.stats.storeErrors++;
    const e = new StoreWriteError(what, err instanceof Error ? err.message : String(err));
    this.warnLimited(e.code, { code: e.code }, e.message);
  }

  logState(agent: AgentRef, change: AgentStateChange | null, reason: string): void {
    if (change !== null) this.log.debug({ agentId: agent.agentId, projectId: agent.projectId, from: change.from, to: change.to, cause: reason }, 'agent state');
  }

  /** A newer connection of the same agent wins; the old one is closed. */
  replaceOlder(current: AgentConnection): void {
    for (const c of this.conns) {
      if (c !== current && c.agentKey === current.agentKey) {
        this.conns.delete(c);
        c.end('ERR_REPLACED', 'a newer connection of this agent replaced this one');
      }
    }
  }

  connectionClosed(c: AgentConnection, wasActive: boolean, cause: string): void {
    this.conns.delete(c);
    this.open.delete(c);
    // Resolves close() once this (synchronous) method has written the agent's state.
    if (this.open.size === 0) this.onDrained?.();
    this.held--;
    const fromIp = (this.heldByIp.get(c.ip) ?? 1) - 1;
    if (fromIp <= 0) this.heldByIp.delete(c.ip);
    else this.heldByIp.set(c.ip, fromIp);
    if (!wasActive) return;
    this.opts.stats.sessions[c.transportName]--;
    // Still the agent's current connection? Then the agent is gone (at once, as on a failed write).
    for (const other of this.conns) if (other.holdsSession && other.agentKey === c.agentKey) return;
    this.setAgentState(c.agent, 'disconnected', cause, this.clock.now());
    this.releaseLater(c.agent);
    this.log.info({ agentId: c.agent.agentId, projectId: c.agent.projectId, cause }, 'agent disconnected');
  }

  connectLost(c: AgentConnection, cause: string): void {
    for (const other of this.conns) if (other !== c && other.holdsSession && other.agentKey === c.agentKey) return;
    this.setAgentState(c.agent, 'disconnected', cause, this.clock.now());
    this.releaseLater(c.agent);
  }

  private closing = false;

  close(): Promise<void> {
    this.closing = true;
    clearInterval(this.keyPoll);
    if (this.beatTimer !== null) this.clock.clearTimeout(this.beatTimer);
    for (const t of this.releaseTimers.values()) this.clock.clearTimeout(t);
    this.releaseTimers.clear();
    for (const c of this.conns) c.end('ERR_SHUTDOWN', 'the collector is shutting down');
    const s = this.server;
    const serverClosed = s === null ? Promise.resolve() : new Promise<void>((resolve) => s.close(() => resolve()));
    // The server can report closed before a connection's own close handler has run (and written the
    // agent's state): wait for both, so the caller may close the store next.
    const drained =
      this.open.size === 0
        ? Promise.resolve()
        : new Promise<void>((resolve) => {
            this.onDrained = resolve;
          });
    // Connections told to end get a moment to flush, then go.
    const t = setTimeout(() => {
      for (const c of [...this.open]) c.close('shutdown');
    }, 300);
    return Promise.all([serverClosed, drained])
      .then(() => clearTimeout(t))
      .then(() => this.opts.store.leave(this.self, this.clock.now()))
      .catch((err: unknown) => this.storeFailed("the collector's leaving", err));
  }
}

export async function startAgentServer(opts: AgentServerOptions): Promise<AgentServer> {
  const srv = new AgentServerImpl(opts);
  await srv.listen();
  await srv.join();
  return srv;
}
