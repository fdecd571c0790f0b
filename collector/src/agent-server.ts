import { type Server, createServer } from 'node:net';
import { type ApmError, type Series, TooManyConnectionsError } from '@apm-sidecar/proto';
import type { Logger } from 'pino';
import { AgentConnection, type AgentLink, type ConnectionHost, type RejectReason, type Wire, refusalFrame, remoteIp } from './agent-connection';
import { type Clock, systemClock } from './clock';
import { StoreWriteError } from './errors';
import { LicensePool } from './licenses';
import { type AgentRef, type AgentState, type AgentStateChange, type CollectorStats, type CollectorStore, agentKey } from './types';

export interface AgentServerOptions {
  host: string;
  port: number;
  store: CollectorStore;
  stats: CollectorStats;
  log: Logger;
  licenses: number;
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
  readonly licenses: LicensePool;
  readonly log: Logger;
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
    this.licenses = new LicensePool(
      opts.licenses,
      opts.licenseReleaseMs,
      (agent) => {
        try {
          opts.store.agentLicensed(agent, false);
        } catch (err) {
          this.storeFailed(`the license release of agent ${agent.agentId}`, err);
        }
        this.log.info({ agentId: agent.agentId, projectId: agent.projectId }, `license released after ${opts.licenseReleaseMs} ms disconnected`);
      },
      this.clock,
    );
    // A key may be revoked by another process (the CLI) on the same store: poll its revocations.
    this.keyPoll = setInterval(() => this.endRevokedSessions(), Math.max(10, opts.keyPollMs ?? 250));
    this.keyPoll.unref();
  }

  /** End every session (or handshake in progress) that proved a key revoked since. */
  private endRevokedSessions(): void {
    this.writeUnwrittenStates();
    let revoked: Set<number>;
    try {
      revoked = new Set(this.opts.store.revokedKeyIds());
    } catch (err) {
      this.log.error({ err }, 'cannot read revoked keys');
      return;
    }
    if (revoked.size === 0) return;
    for (const c of this.conns) {
      if (c.keyId === null || !revoked.has(c.keyId)) continue;
      this.conns.delete(c);
      this.log.warn({ agentId: c.agent.agentId, projectId: c.agent.projectId }, 'access key revoked: session ended');
      // When it closes (at once, or 200 ms later at most) the agent is marked disconnected.
      c.end('ERR_KEY_REVOKED', 'the access key of this session was revoked');
    }
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
    let change: AgentStateChange | null;
    try {
      change = this.opts.store.setAgentState(agent, to, { at, reason });
    } catch (err) {
      // The store cannot take it now (disk full, I/O error): kept, and written when it can be.
      this.unwrittenStates.set(key, { agent, to, reason, at });
      this.storeFailed(`the state of agent ${agent.agentId}`, err);
      return;
    }
    this.unwrittenStates.delete(key);
    this.logState(agent, change, reason);
  }

  /**
   * Agents' state changes the store could not take, written again on the key poll. One that a
   * connection of the agent has since overtaken (its connect wrote 'live') is given up.
   */
  private writeUnwrittenStates(): void {
    for (const [key, u] of [...this.unwrittenStates]) {
      this.unwrittenStates.delete(key);
      if ([...this.conns].some((c) => c.agentKey === key)) continue;
      this.setAgentState(u.agent, u.to, u.reason, u.at);
      if (this.unwrittenStates.has(key)) return; // still failing: try again on the next poll
    }
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
    for (const other of this.conns) if (other.agentKey === c.agentKey) return;
    this.setAgentState(c.agent, 'disconnected', cause, this.clock.now());
    this.licenses.disconnected(c.agent);
    this.log.info({ agentId: c.agent.agentId, projectId: c.agent.projectId, cause }, 'agent disconnected');
  }

  close(): Promise<void> {
    clearInterval(this.keyPoll);
    for (const c of this.conns) c.end('ERR_SHUTDOWN', 'the collector is shutting down');
    this.licenses.close();
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
    return Promise.all([serverClosed, drained]).then(() => clearTimeout(t));
  }
}

export async function startAgentServer(opts: AgentServerOptions): Promise<AgentServer> {
  const srv = new AgentServerImpl(opts);
  await srv.listen();
  return srv;
}
