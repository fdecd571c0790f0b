import { ApmError, FrameParser, FrameTooLargeError, type Series, UnexpectedMessageError } from '@apm-sidecar/proto';
import {
  type AgentInfo,
  BadKeyError,
  Direction,
  FrameGapError,
  HandshakeError,
  Inner,
  Opener,
  ReplayError,
  Sealer,
  type ServerHandshake,
  TamperedFrameError,
  UpstreamType,
  decodeAgentInfo,
  decodeMetricBatch,
  decodeTextBatch,
  encodeAgentConfig,
  encodeLicense,
  encodePing,
  encodeUpAck,
  encodeUpError,
  answerKeepalive,
  readClientHello,
} from '@apm-sidecar/proto/upstream';
import nacl from 'tweetnacl';
import type { Logger } from 'pino';
import type { AgentServerOptions } from './agent-server';
import type { Clock } from './clock';
import { HandshakeTimeoutError, StoreWriteError } from './errors';
import { KEY_REFUSED_MESSAGE, proveKey } from './key-proof';
import type { AgentConnect } from './store/contract';
import { type AgentRef, type AgentState, type AgentStateChange, agentKey } from './types';
import { type AgentLink, PREAUTH_MAX_FRAME_BYTES, type Wire, refusalFrame, remoteIp } from './agent-wire';

export { type AgentLink, PREAUTH_MAX_FRAME_BYTES, type RejectReason, type Wire, refusalFrame, remoteIp } from './agent-wire';

/** What a carrier may ask of the connection it serves. */
const INNER_NAMES: Record<number, string> = Object.fromEntries(Object.entries(Inner).map(([k, v]) => [v, k]));

type Phase = 'hello' | 'finished' | 'info' | 'active' | 'closed';

/** What a connection needs of the server that holds it (agent-server.ts). */
export interface ConnectionHost {
  readonly opts: AgentServerOptions;
  readonly log: Logger;
  readonly clock: Clock;
  readonly seriesCache: Map<string, Series>;
  /** This collector's id in the store: the sessions it holds are written under it. */
  readonly collectorId: string;
  /**
   * The agent's row, 'live', its session held by this collector (after the agent's earlier state
   * writes), and a license taken (or kept) from the store's one pool: one commit.
   */
  connectAgent(projectId: string, info: AgentInfo, at: number): Promise<AgentConnect>;
  connectionClosed(c: AgentConnection, wasActive: boolean, cause: string): void;
  /** The connection ended while connectAgent was committed: unless the agent has another, it is disconnected. */
  connectLost(c: AgentConnection, cause: string): void;
  /** A newer connection of the same agent wins; the old one is closed. */
  replaceOlder(current: AgentConnection): void;
  warnLimited(code: string, fields: Record<string, unknown>, message: string): void;
  setAgentState(agent: AgentRef, to: AgentState, reason: string, at: number): void;
  logState(agent: AgentRef, change: AgentStateChange | null, reason: string): void;
}

/**
 * Frames waiting for the store (a batch being committed, the ones behind it) before the socket
 * is paused: each may be as large as max_frame_bytes, so this bounds what one agent holds.
 */
const MAX_QUEUED_FRAMES = 4;

/**
 * One agent connection on the collector:
 *
 *   ClientHello → (key lookup, proof) → ServerHello → ClientFinished
 *   → AgentInfo → Config + License → data frames (stored, then acked)
 *
 * Every rejection is counted (badKey, replay, tampered, tooLarge, malformed,
 * frameGap, handshakeTimeout) and closes only this connection. Before the
 * agent is authenticated a frame may carry at most PREAUTH_MAX_FRAME_BYTES, and
 * the handshake must be done (configuration sent) within handshake_timeout_ms,
 * so an unauthenticated peer holds a few KiB for a bounded time.
 *
 * Frames are handled one at a time, in order: a frame that waits for the store (a key lookup,
 * a batch's commit) holds the ones behind it, and the socket is paused while MAX_QUEUED_FRAMES
 * wait. An ack is written only after its batch committed.
 *
 * Liveness (Introscope): a failed write marks
 * the agent disconnected at once; a connection idle for idle_ping_ms is
 * pinged and closed if the pong does not come within another idle_ping_ms; a
 * live connection that carries no data for stall_after_ms is `stalled`.
 */
export class AgentConnection implements AgentLink {
  private phase: Phase = 'hello';
  /** Set when the connection is being refused or ended: it no longer counts as accepting. */
  private ending = false;
  private readonly parser: FrameParser;
  private handshakeTimer: unknown;
  readonly ip: string;
  private projectId = '';
  private agentId = '';
  /** (project, agent_id), set from the ClientHello; its string form keys the server's maps. */
  private ref: AgentRef = { projectId: '', agentId: '' };
  private refKey = '';
  /** The access key this session proved (its store id), so revoking it ends the session. */
  keyId: number | null = null;
  private handshake: ServerHandshake | null = null;
  private sealer: Sealer | null = null;
  private opener: Opener | null = null;
  private lastActivity: number;
  private lastData: number;
  private pingSentAt = 0;
  /** When this collector last wrote to the agent. */
  private lastSent: number;
  /** A third of the agent's read timeout (AgentInfo.soTimeoutMs); null when the agent did not say. */
  private keepaliveMs: number | null = null;
  private stalled = false;
  private timer: unknown = null;
  private tickMs: number;
  private readonly clock: Clock;
  /** The frame being handled and those behind it (see MAX_QUEUED_FRAMES). */
  private work: Promise<void> = Promise.resolve();
  private queued = 0;
  private paused = false;

  constructor(
    readonly socket: Wire,
    private readonly srv: ConnectionHost,
    private readonly transport: 'tcp' | 'http',
  ) {
    this.ip = remoteIp(socket);
    this.clock = srv.clock;
    this.lastActivity = this.clock.now();
    this.lastData = this.lastActivity;
    this.lastSent = this.lastActivity;
    const parser = new FrameParser(Math.min(PREAUTH_MAX_FRAME_BYTES, srv.opts.maxFrameBytes), (type, payload) => this.enqueue(type, payload));
    this.parser = parser;
    this.handshakeTimer = this.clock.setTimeout(() => {
      this.handshakeTimer = null;
      if (this.phase !== 'active' && this.phase !== 'closed' && !this.ending) this.reject(new HandshakeTimeoutError(srv.opts.handshakeTimeoutMs));
    }, srv.opts.handshakeTimeoutMs);
    socket.on('data', (chunk: Buffer) => {
      this.lastActivity = this.clock.now();
      this.pingSentAt = 0;
      try {
        parser.push(chunk);
      } catch (err) {
        this.reject(err);
      }
    });
    socket.on('error', () => this.close('write or read failed'));
    socket.on('close', () => this.close('connection closed'));
    this.tickMs = Math.max(10, Math.min(srv.opts.idlePingMs, srv.opts.stallAfterMs) / 4);
    this.scheduleTick();
  }

  get agent(): AgentRef {
    return this.ref;
  }

  /** agentKey(agent): equal for two connections of the same agent identity only. */
  get agentKey(): string {
    return this.refKey;
  }

  get transportName(): 'tcp' | 'http' {
    return this.transport;
  }

  /** Refused, ended or closed: nothing more is handled. */
  private get gone(): boolean {
    return this.ending || this.phase === 'closed';
  }

  /**
   * Its agent's session is, or is being, written as this connection's (connectAgent was called):
   * only such a connection stands for the agent when another one of it ends. One still in the
   * handshake, possibly with a wrong key, does not.
   */
  get holdsSession(): boolean {
    return this.registered && this.phase !== 'closed';
  }
  private registered = false;

  get helloAccepted(): boolean {
    return !this.ending && this.phase !== 'hello' && this.phase !== 'closed';
  }

  close(cause: string): void {
    if (this.phase === 'closed') return;
    const wasActive = this.phase === 'active';
    this.phase = 'closed';
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    if (this.handshakeTimer !== null) this.clock.clearTimeout(this.handshakeTimer);
    this.socket.destroy();
    this.srv.connectionClosed(this, wasActive, cause);
  }

  /** Send a sealed error, then close (used when the connection is replaced or the server stops). */
  end(code: string, message: string): void {
    this.ending = true;
    if (this.sealer !== null && this.phase !== 'closed') this.socket.write(this.sealer.text(Inner.Error, encodeUpError(code, message)));
    this.socket.end();
    this.clock.setTimeout(() => this.close(message), 200);
  }

  /** The next liveness check, set again after each until one closes the connection (close() clears it). */
  private scheduleTick(): void {
    this.timer = this.clock.setTimeout(() => {
      this.timer = null;
      if (this.tick()) this.scheduleTick();
    }, this.tickMs);
  }

  /** One liveness check (idle ping, stall); false when it closed the connection. */
  private tick(): boolean {
    const now = this.clock.now();
    const o = this.srv.opts;
    if (this.pingSentAt > 0 && now - this.pingSentAt >= o.idlePingMs) {
      this.srv.log.warn({ agentId: this.agentId }, `no answer to a ping within ${o.idlePingMs} ms: agent disconnected`);
      this.close('ping unanswered');
      return false;
    }
    if (this.phase === 'active' && this.pingSentAt === 0 && now - this.lastActivity >= o.idlePingMs) {
      this.pingSentAt = now;
      this.write((this.sealer as Sealer).text(Inner.Ping, encodePing(now)));
    }
    // A frame still arriving (a large one, a slow link) is acked only once complete: until then the
    // agent would hear nothing and its read timeout would end a healthy session, again and again
    // on every resend. While its bytes keep coming, it hears a ping every third of that timeout.
    const k = this.keepaliveMs;
    if (this.phase === 'active' && k !== null && this.parser.pendingBytes > 0 && now - this.lastActivity < k && now - this.lastSent >= k) {
      this.write((this.sealer as Sealer).text(Inner.Ping, encodePing(now)));
    }
    if (this.phase === 'active' && !this.stalled && now - this.lastData >= o.stallAfterMs) {
      this.stalled = true;
      this.srv.setAgentState(this.ref, 'stalled', `no data for ${o.stallAfterMs} ms`, now);
      this.srv.log.warn({ agentId: this.agentId }, `connected but no data for ${o.stallAfterMs} ms: agent stalled`);
    }
    return true;
  }

  private write(frame: Buffer): void {
    if (this.phase === 'closed') return;
    this.lastSent = this.clock.now();
    // A failed write surfaces as 'error' and marks the agent disconnected at once.
    this.socket.write(frame);
  }

  private count(type: string): void {
    const f = this.srv.opts.stats.frames;
    f[type] = (f[type] ?? 0) + 1;
  }

  private reject(err: unknown): void {
    if (this.gone) return;
    this.ending = true;
    const st = this.srv.opts.stats.rejected;
    const code = err instanceof ApmError ? err.code : 'ERR_INTERNAL';
    if (err instanceof BadKeyError) st.badKey++;
    else if (err instanceof ReplayError) st.replay++;
    else if (err instanceof TamperedFrameError) st.tampered++;
    else if (err instanceof FrameTooLargeError) st.tooLarge++;
    else if (err instanceof FrameGapError) st.frameGap++;
    else if (err instanceof HandshakeTimeoutError) st.handshakeTimeout++;
    else if (err instanceof StoreWriteError) st.storeFailed++;
    else st.malformed++;
    const message = err instanceof Error ? err.message : String(err);
    // The log keeps the reason; the wire gets the one refusal (no oracle for projects or keys).
    const wireMessage = err instanceof BadKeyError ? KEY_REFUSED_MESSAGE : message;
    const fields = { code, agentId: this.agentId || undefined, projectId: this.projectId || undefined, remote: this.socket.remoteAddress };
    const preAuth = this.phase === 'hello' || this.phase === 'finished';
    // Anyone can provoke a pre-auth refusal, as often as they like, and a failing store refuses every
    // agent's batches until it writes again: those are logged rate-limited.
    if (preAuth || err instanceof StoreWriteError) this.srv.warnLimited(code, fields, `rejected agent connection: ${message}`);
    else this.srv.log.warn(fields, `rejected agent connection: ${message}`);
    if (preAuth) {
      this.socket.write(refusalFrame(code, wireMessage));
    } else if (this.sealer !== null && !(err instanceof TamperedFrameError) && !(err instanceof ReplayError)) {
      this.socket.write(this.sealer.text(Inner.Error, encodeUpError(code, wireMessage)));
    }
    this.socket.end();
    this.socket.pause?.();
    this.clock.setTimeout(() => this.close(`rejected: ${code}`), 200);
  }

  /**
   * Handle a frame after those before it; the first failure refuses the session and the rest
   * are dropped. With nothing waiting, the frame is handled at once (up to its first store call);
   * one that must wait is copied, since the parser reuses the memory its payload is a view of.
   */
  private enqueue(type: number, payload: Buffer): void {
    const idle = this.queued === 0;
    this.queued++;
    if (this.queued >= MAX_QUEUED_FRAMES && !this.paused && this.socket.pause !== undefined) {
      this.paused = true;
      this.socket.pause();
    }
    const handle = (body: Buffer) => async (): Promise<void> => {
      if (!this.gone) await this.frame(type, body);
    };
    const started = idle ? handle(payload)() : this.work.then(handle(Buffer.from(payload)));
    this.work = started
      .catch((err: unknown) => this.reject(err))
      .finally(() => {
        this.queued--;
        if (this.paused && this.queued < MAX_QUEUED_FRAMES / 2 && !this.gone) {
          this.paused = false;
          this.socket.resume?.();
        }
      });
  }

  /** Resolves once every frame received so far was handled (tests, and close() of the server). */
  get idle(): Promise<void> {
    return this.work;
  }

  private async frame(type: number, payload: Buffer): Promise<void> {
    switch (this.phase) {
      case 'hello': {
        if (type !== UpstreamType.ClientHello) throw new HandshakeError(`expected ClientHello, got frame type ${type}`);
        this.count('ClientHello');
        const hello = readClientHello(payload);
        this.projectId = hello.projectId;
        this.agentId = hello.agentId;
        this.ref = { projectId: hello.projectId, agentId: hello.agentId };
        this.refKey = agentKey(this.ref);
        const { handshake, keyId } = proveKey(hello, await stored("the project's keys", () => this.srv.opts.store.projectKeys(hello.projectId)));
        if (this.ending || this.phase !== 'hello') return;
        this.handshake = handshake;
        this.keyId = keyId;
        this.write(this.handshake.serverHello());
        this.phase = 'finished';
        return;
      }
      case 'finished': {
        if (type !== UpstreamType.ClientFinished) throw new HandshakeError(`expected ClientFinished, got frame type ${type}`);
        this.count('ClientFinished');
        const keys = (this.handshake as ServerHandshake).clientFinished(payload);
        this.handshake = null;
        this.sealer = new Sealer(nacl, keys, Direction.CollectorToAgent);
        this.opener = new Opener(nacl, keys, Direction.AgentToCollector);
        this.phase = 'info';
        // Authenticated: from the next frame on (also in this chunk) the normal maximum applies.
        this.parser.maxFrameBytes = this.srv.opts.maxFrameBytes;
        return;
      }
      case 'info':
      case 'active':
        await this.sealed(type, payload);
        return;
      case 'closed':
        return;
    }
  }

  private async sealed(type: number, payload: Buffer): Promise<void> {
    const m = (this.opener as Opener).open(type, payload);
    this.count(INNER_NAMES[m.inner] ?? `inner${m.inner}`);
    const o = this.srv.opts;
    const now = this.clock.now();
    if (this.phase === 'info') {
      if (m.inner !== Inner.AgentInfo) throw new UnexpectedMessageError('the first sealed message must be AgentInfo');
      const info = decodeAgentInfo(m.body);
      if (info.agentId !== this.agentId) throw new UnexpectedMessageError('AgentInfo names another agent than the handshake');
      await this.activate(info);
      return;
    }
    if (answerKeepalive(this.sealer as Sealer, m, (f) => this.write(f))) return;
    switch (m.inner) {
      case Inner.MetricBatch: {
        const packs = decodeMetricBatch(m.body, this.srv.seriesCache);
        const r = await stored('a metric batch', () => o.store.storeMetrics(this.ref, packs, now));
        o.stats.received.metricPoints += r.stored;
        o.stats.droppedLate += r.late;
        o.stats.duplicatePacks += r.duplicatePacks;
        await this.dataSeen(now);
        this.write((this.sealer as Sealer).text(Inner.Ack, encodeUpAck(m.counter)));
        return;
      }
      case Inner.TextBatch: {
        const items = decodeTextBatch(m.body);
        const r = await stored('a text batch', () => o.store.storeText(this.ref, items));
        const rec = o.stats.received;
        rec.traces += r.traces;
        rec.events += r.events;
        rec.snapshots += r.snapshots;
        rec.activeStacks += r.activeStacks;
        rec.btRegistrations += r.btRegistrations;
        await this.dataSeen(now);
        this.write((this.sealer as Sealer).text(Inner.Ack, encodeUpAck(m.counter)));
        return;
      }
      case Inner.AgentInfo: {
        // The set of apps behind the sidecar changed.
        const info = decodeAgentInfo(m.body);
        if (info.agentId !== this.agentId) throw new UnexpectedMessageError('AgentInfo names another agent than the handshake');
        await stored("the agent's info", () => o.store.agentInfo(this.projectId, info, now));
        return;
      }
      default:
        throw new UnexpectedMessageError(`unexpected message ${m.inner} from an agent`);
    }
  }

  private async dataSeen(now: number): Promise<void> {
    this.lastData = now;
    await stored("the agent's last-seen time", () => this.srv.opts.store.agentSeen(this.ref, now));
    if (this.stalled) {
      this.stalled = false;
      this.srv.setAgentState(this.ref, 'live', 'data again', now);
    }
  }

  private async activate(info: AgentInfo): Promise<void> {
    const o = this.srv.opts;
    const now = this.clock.now();
    this.registered = true;
    let connected: AgentConnect;
    try {
      connected = await stored('the agent and its license', () => this.srv.connectAgent(this.projectId, info, now));
    } catch (err) {
      // It may have committed all the same (a reply lost): the agent must not stay live with no session.
      this.srv.connectLost(this, 'its connection could not be stored');
      throw err;
    }
    const { change, license: lic } = connected;
    this.srv.logState(this.ref, change, 'connected');
    if (this.gone) {
      // It left while that was committed: the store shows it live and licensed, with no session.
      this.srv.connectLost(this, 'closed before its session began');
      return;
    }
    this.srv.replaceOlder(this);
    if (this.handshakeTimer !== null) this.clock.clearTimeout(this.handshakeTimer);
    this.handshakeTimer = null;
    const s = this.sealer as Sealer;
    const settings: Record<string, number> = { idlePingMs: o.idlePingMs };
    if (o.tunnelSessionTimeoutMs !== undefined) settings.tunnelSessionTimeoutMs = o.tunnelSessionTimeoutMs;
    // One write for both: one segment, one wake-up of the agent.
    this.write(Buffer.concat([s.text(Inner.Config, encodeAgentConfig({ configVersion: 1, settings })), s.text(Inner.License, encodeLicense(lic))]));
    if (!lic.granted) {
      // Listed (greyed, unlicensed) but not live: it has no session. (agentConnected above set 'live'; a
      // refusal only happens to an agent with no other connection, since a connected agent holds its license.)
      this.srv.setAgentState(this.ref, 'disconnected', 'no license available', now);
      o.log.warn({ agentId: this.agentId, projectId: this.projectId, reason: lic.reason }, 'agent refused: no license available');
      this.socket.end();
      return;
    }
    this.phase = 'active';
    this.lastData = now;
    if (info.soTimeoutMs !== undefined) {
      this.keepaliveMs = Math.max(10, Math.floor(info.soTimeoutMs / 3));
      this.tickMs = Math.min(this.tickMs, Math.max(10, this.keepaliveMs / 2));
    }
    o.stats.sessions[this.transport]++;
    o.log.info({ agentId: this.agentId, projectId: this.projectId, host: info.host, apps: info.apps, remote: this.socket.remoteAddress }, 'agent connected');
  }
}

/**
 * A store write on the agent's path. A failure (SQLITE_FULL, an I/O error, a damaged file)
 * becomes StoreWriteError: the session is then refused with it, so nothing the write carried
 * is acked and the agent sends it again on its next session.
 */
async function stored<T>(what: string, write: () => Promise<T>): Promise<T> {
  try {
    return await write();
  } catch (err) {
    throw new StoreWriteError(what, err instanceof Error ? err.message : String(err));
  }
}
