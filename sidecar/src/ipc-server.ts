import { lstatSync, unlinkSync } from 'node:fs';
import { type Server, type Socket, createServer } from 'node:net';
import {
  type ApmError,
  type ControlResult,
  type Hello,
  InstanceSecretError,
  type Series,
  type ShimToSidecar,
  TooManyConnectionsError,
} from '@apm-sidecar/proto';
import type { Counters } from './counters';
import { InstanceBindings } from './instance-binding';
import type { Logger } from './logger';
import { type PeerLimits, type SessionHost, type ShimIdentity, ShimSession } from './shim-session';
import { SocketInUseError, claimSocketPath, describeTightening, listenPrivately, prepareSocketDir, probeSocket } from './socket-path';
import { requestStatus } from './status-client';

/** What the IPC server hands on: shims' messages, status and control requests. */
export interface IpcHandler {
  /** The Welcome frame for a shim whose instance is bound. */
  welcome(hello: Hello): Buffer;
  message(session: ShimSession, msg: ShimToSidecar, payload: Buffer): void;
  status(): unknown;
  control(command: string): Promise<ControlResult>;
  /** An instance seen for the first time: its binding is to be persisted. */
  bound(instanceId: string, secretHash: Buffer): void;
  /** A shim of an app no other connected shim belongs to. */
  newApp(): void;
}

export interface IpcServerOptions {
  socketPath: string;
  socketGroup: string;
  maxFrameBytes: number;
  maxShims: number;
  peerLimits: PeerLimits;
  seriesCache: Map<string, Series>;
  counters: Counters;
  log: Logger;
}

/** A shim's row in `apm-sidecar status`. */
export interface ShimStatus {
  session: number;
  app: string;
  pid: number;
  instance: string;
  shimVersion: string;
  connectedAt: string;
  lastSeenAt: string;
  frames: number;
  bytes: number;
  ackedSeq: number;
}

/**
 * The IPC server: the private Unix socket, one ShimSession per accepted connection (bounded by
 * max_shims), and the binding of instance ids to their shims' secrets. A peer's protocol errors
 * close its connection only; they are counted by code and logged at most every 10 s per code.
 */
export class IpcServer implements SessionHost {
  readonly maxFrameBytes: number;
  readonly peerLimits: PeerLimits;
  readonly seriesCache: Map<string, Series>;
  private readonly server: Server;
  private readonly sessions = new Set<ShimSession>();
  /** The session that speaks for each instance now (at most one). */
  private readonly liveInstances = new Map<string, ShimSession>();
  readonly bindings = new InstanceBindings((id) => this.liveInstances.has(id));
  private readonly errorLogAt = new Map<string, number>();
  private listeningNow = false;
  private accepting = true;

  constructor(
    private readonly opts: IpcServerOptions,
    private readonly handler: IpcHandler,
  ) {
    this.maxFrameBytes = opts.maxFrameBytes;
    this.peerLimits = opts.peerLimits;
    this.seriesCache = opts.seriesCache;
    this.server = createServer((socket) => this.accept(socket));
  }

  /** Bound to its socket (even if setting its mode failed): close() removes the file. */
  get listening(): boolean {
    return this.listeningNow;
  }

  /** A live socket means another sidecar: refuse before touching anything, naming its pid when it answers. */
  async refuseLiveSocket(): Promise<void> {
    const path = this.opts.socketPath;
    try {
      if (!lstatSync(path).isSocket()) return; // claimSocketPath refuses it later, with its own message
    } catch {
      return;
    }
    if (!(await probeSocket(path))) return;
    let pid: unknown = null;
    try {
      pid = (await requestStatus(path, 1000)).pid;
    } catch {
      // a listener that is not a sidecar, or a hung one: still live
    }
    const who = typeof pid === 'number' ? ` (pid ${pid})` : '';
    throw new SocketInUseError(`another sidecar is already listening on ${path}${who}; refusing to start`);
  }

  async listen(): Promise<void> {
    const { socketPath, socketGroup, log } = this.opts;
    const { gid, tightened } = prepareSocketDir(socketPath, socketGroup);
    if (tightened !== null) log.warn({ dir: tightened.dir }, describeTightening(tightened));
    const replaced = await claimSocketPath(socketPath);
    if (replaced) log.warn({ socket: socketPath }, 'replaced a stale socket file (nothing was listening)');
    try {
      await listenPrivately(this.server, socketPath, gid);
    } finally {
      this.listeningNow = this.server.listening;
    }
    this.server.on('error', (err) => log.error({ err }, 'IPC server error'));
  }

  /** Stop accepting; with `end`, ask every peer to finish (a clean shutdown). */
  stopAccepting(end: boolean): void {
    this.accepting = false;
    if (this.listeningNow) this.server.close();
    if (end) for (const s of this.sessions) s.socket.end();
  }

  /** Cut every connection (the shutdown deadline passed). */
  destroyAll(): void {
    for (const s of this.sessions) s.socket.destroy();
  }

  /** Last of all at shutdown, after the data_dir lock is released: a successor finds neither. */
  removeSocketFile(): void {
    if (!this.listeningNow) return;
    try {
      unlinkSync(this.opts.socketPath);
    } catch {
      // already gone
    }
  }

  /** A frame for every shim (a state change). */
  broadcast(frame: Buffer): void {
    for (const s of this.sessions) if (s.isShim) s.send(frame);
  }

  get shimCount(): number {
    let n = 0;
    for (const s of this.sessions) if (s.isShim) n++;
    return n;
  }

  /** Apps of the shims connected now. */
  apps(): string[] {
    const out = new Set<string>();
    for (const s of this.sessions) if (s.hello !== null) out.add(s.hello.app);
    return [...out];
  }

  shims(): ShimStatus[] {
    return [...this.sessions]
      .filter((s) => s.isShim)
      .map((s) => {
        const h = s.hello as ShimIdentity;
        return {
          session: s.id,
          app: h.app,
          pid: h.pid,
          // A prefix tells people which shim this is; the full id is not handed to every socket client.
          instance: h.instanceId.slice(0, 8),
          shimVersion: h.shimVersion,
          connectedAt: new Date(s.connectedAt).toISOString(),
          lastSeenAt: new Date(s.lastSeenAt).toISOString(),
          frames: s.frames,
          bytes: s.bytes,
          ackedSeq: s.ackedSeq,
        };
      });
  }

  // --- SessionHost ----------------------------------------------------------

  hello(session: ShimSession, hello: Hello): Buffer {
    this.bindInstance(session, hello);
    // A new app behind this sidecar: tell the collector (the session is already listed, so look at the others).
    let known = false;
    for (const s of this.sessions) if (s !== session && s.hello?.app === hello.app) known = true;
    if (!known) setImmediate(() => this.handler.newApp());
    this.opts.log.info(
      { session: session.id, app: hello.app, appPid: hello.pid, instanceId: hello.instanceId, shimVersion: hello.shimVersion },
      'shim connected',
    );
    return this.handler.welcome(hello);
  }

  message(session: ShimSession, msg: ShimToSidecar, payload: Buffer): void {
    this.handler.message(session, msg, payload);
  }

  status(): unknown {
    return this.handler.status();
  }

  control(command: string): Promise<ControlResult> {
    return this.handler.control(command);
  }

  protocolError(session: ShimSession, err: ApmError): void {
    // Not the peer's fault: counted as retentionRefused and reported by the retention condition.
    if (err.code === 'ERR_RETENTION_UNAVAILABLE') return;
    const { counters } = this.opts;
    counters.ipcErrors[err.code] = (counters.ipcErrors[err.code] ?? 0) + 1;
    // Count every one, log each code at most every 10 s: a broken client cannot flood the log.
    const now = Date.now();
    const last = this.errorLogAt.get(err.code) ?? 0;
    if (now - last >= 10_000) {
      this.errorLogAt.set(err.code, now);
      this.opts.log.warn(
        { session: session.id, code: err.code, app: session.hello?.app, appPid: session.hello?.pid, total: counters.ipcErrors[err.code] },
        `closing IPC connection: ${err.message}`,
      );
    }
  }

  closed(session: ShimSession): void {
    if (session.hello !== null && this.liveInstances.get(session.hello.instanceId) === session) this.liveInstances.delete(session.hello.instanceId);
    if (!this.sessions.delete(session)) return;
    if (session.isShim) this.opts.log.info({ session: session.id, app: session.hello?.app, appPid: session.hello?.pid }, 'shim disconnected');
  }

  // --- internals ------------------------------------------------------------

  /**
   * An instance id belongs to the shim whose secret it was first seen with
   * (kept as a hash, in the retention too). Another secret is refused; the
   * same secret on a new connection is that shim reconnecting before its old
   * connection was seen to close, which is then closed.
   */
  private bindInstance(session: ShimSession, hello: Hello): void {
    const hash = InstanceBindings.hash(hello.secret);
    const check = this.bindings.check(hello.instanceId, hash);
    if (check === 'mismatch') throw new InstanceSecretError();
    const previous = this.liveInstances.get(hello.instanceId);
    if (previous !== undefined && previous !== session) {
      this.opts.log.info({ session: previous.id, by: session.id, app: hello.app }, 'shim reconnected: closing its previous connection');
      previous.socket.destroy();
    }
    this.liveInstances.set(hello.instanceId, session);
    this.bindings.bind(hello.instanceId, hash);
    if (check === 'new') this.handler.bound(hello.instanceId, hash);
  }

  private accept(socket: Socket): void {
    this.opts.counters.connections++;
    if (!this.accepting) {
      socket.destroy();
      return;
    }
    const session = new ShimSession(socket, this);
    if (this.sessions.size >= this.opts.maxShims) {
      session.fail(new TooManyConnectionsError(this.opts.maxShims));
      return;
    }
    this.sessions.add(session);
  }
}
