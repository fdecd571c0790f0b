import type { Socket } from 'node:net';

// node:net is loaded at the first connection attempt, not when the app imports
// the shim: it is the largest part of the shim's load time.
let net: typeof import('node:net') | undefined;
function createConnection(opts: { path: string }): Socket {
  net ??= require('node:net') as typeof import('node:net');
  return net.createConnection(opts);
}
import {
  type ApmError,
  DEFAULT_MAX_FRAME_BYTES,
  type ErrorMessage,
  FrameParser,
  MalformedMessageError,
  MessageType,
  type StateChange,
  UnexpectedMessageError,
  type Welcome,
  decodeError,
  decodeStateChange,
  decodeWelcome,
} from '@apm-sidecar/proto';
import { backoffDelay } from './backoff';
import { SOCKET_OWNER_CODE, socketOwnerProblem } from './socket-owner';

export interface ConnectionHandler {
  /** A welcome arrived: the connection is ready for frames. */
  welcome(w: Welcome): void;
  stateChange(s: StateChange): void;
  ack(seq: number): void;
  sidecarError(e: ErrorMessage): void;
  /** This side would not connect (e.g. the socket has a foreign owner); lost() follows. */
  refused(e: ErrorMessage): void;
  /** The connection is gone (or never came); a retry is scheduled. */
  lost(cause: string): void;
  /** The socket drained below its high-water mark. */
  drain(): void;
}

export interface ConnectionOptions {
  path: () => string;
  hello: () => Buffer;
  reconnectMinMs: number;
  reconnectMaxMs: number;
  /**
   * A write that makes no progress for this long means the sidecar stopped
   * reading: the connection is dropped (and retried). Without this, a pending
   * write to a hung sidecar would hold the app's event loop open forever.
   */
  stallTimeoutMs: number;
}

type Phase = 'idle' | 'connecting' | 'handshaking' | 'ready' | 'closed';

/** Bytes queued in the socket past which best-effort frames wait instead. */
export const SOCKET_HIGH_WATER = 1024 * 1024;

/**
 * One Unix-socket connection to the sidecar, re-established with jittered
 * backoff. Never keeps the process alive: the socket and timers are unref'd,
 * except while the app awaits flush()/close() (`hold`), which are bounded by
 * their deadlines, and a write stuck behind a sidecar that stopped reading is
 * cut after `stallTimeoutMs`. Events from a socket that is no longer the
 * current one are ignored.
 */
export class Connection {
  #socket: Socket | null = null;
  #phase: Phase = 'idle';
  #attempt = 0;
  #timer: NodeJS.Timeout | null = null;
  #corked = false;
  #held = false;
  #readyAt = 0;
  /** Write completions on the current socket, and the value the stall check saw last. */
  #writesDone = 0;
  #writesDoneAtCheck = 0;
  #stallTimer: NodeJS.Timeout | null = null;
  readonly uncork = (): void => {
    this.#corked = false;
    process.removeListener('exit', this.uncork);
    this.#socket?.uncork();
  };
  readonly #written = (): void => {
    this.#writesDone++;
  };
  readonly #checkStall = (): void => {
    this.#stallTimer = null;
    const s = this.#socket;
    if (s === null || s.writableLength === 0) return;
    if (this.#writesDone === this.#writesDoneAtCheck) {
      this.reset('sidecar stopped reading');
      return;
    }
    this.#armStallCheck();
  };

  readonly #opts: ConnectionOptions;
  readonly #handler: ConnectionHandler;

  constructor(opts: ConnectionOptions, handler: ConnectionHandler) {
    this.#opts = opts;
    this.#handler = handler;
  }

  get ready(): boolean {
    return this.#phase === 'ready';
  }

  get congested(): boolean {
    return this.#socket !== null && this.#socket.writableLength > SOCKET_HIGH_WATER;
  }

  start(): void {
    if (this.#phase === 'idle') this.#open();
  }

  /**
   * Write one frame; only call when ready. Frames written in one turn of the event loop go out in
   * one writev: a server ending many requests per turn sends their traces in one syscall, not one each.
   */
  send(frame: Buffer): void {
    const s = this.#socket;
    if (s === null) return;
    if (!this.#corked) {
      this.#corked = true;
      s.cork();
      setImmediate(this.uncork);
      // An app exiting before the check phase (process.exit() after an await) still gets the
      // frames out: uncorking writes synchronously to the socket when nothing is queued before.
      process.once('exit', this.uncork);
    }
    s.write(frame, this.#written);
    if (this.#stallTimer === null) this.#armStallCheck();
  }

  /**
   * Keep the event loop alive (true) while the app awaits flush() or close(),
   * so the ack or the close can arrive; the caller bounds it with a deadline.
   */
  hold(on: boolean): void {
    this.#held = on;
    const s = this.#socket;
    if (s !== null) {
      if (on) s.ref();
      else s.unref();
    }
  }

  /** Drop the current connection (if any) and retry after backoff. */
  reset(cause: string): void {
    if (this.#phase === 'closed') return;
    this.#teardown();
    this.#handler.lost(cause);
    this.#schedule();
  }

  /** Stop for good; waits for queued bytes to be written, bounded by `timeoutMs`. */
  close(timeoutMs: number): Promise<void> {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    this.#disarmStallCheck();
    const s = this.#socket;
    const wasReady = this.#phase === 'ready';
    this.#phase = 'closed';
    this.#socket = null;
    if (s === null) return Promise.resolve();
    if (!wasReady) {
      s.destroy();
      return Promise.resolve();
    }
    // The app awaits this promise: keep the loop alive until it settles (at most timeoutMs).
    s.ref();
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        s.destroy();
        resolve();
      }, timeoutMs);
      s.once('close', () => {
        clearTimeout(t);
        resolve();
      });
      if (this.#corked) this.uncork();
      s.end();
    });
  }

  #open(): void {
    this.#phase = 'connecting';
    let path: string;
    try {
      path = this.#opts.path();
    } catch {
      this.#handler.lost('no socket path');
      this.#schedule();
      return;
    }
    const refused = socketOwnerProblem(path);
    if (refused !== null) {
      // Treated like an absent sidecar: keep buffering and retry (the owner may change).
      this.#phase = 'idle';
      this.#handler.refused({ code: SOCKET_OWNER_CODE, message: refused });
      this.#handler.lost(`${SOCKET_OWNER_CODE}: ${refused}`);
      this.#schedule();
      return;
    }
    const s = createConnection({ path });
    this.#socket = s;
    this.#writesDone = 0;
    this.#writesDoneAtCheck = 0;
    if (!this.#held) s.unref();
    s.setNoDelay?.(true);
    const parser = new FrameParser(DEFAULT_MAX_FRAME_BYTES, (type, payload) => this.#frame(s, type, payload));
    s.on('connect', () => {
      if (s !== this.#socket) return;
      this.#phase = 'handshaking';
      s.write(this.#opts.hello());
    });
    s.on('data', (chunk: Buffer) => {
      if (s !== this.#socket) return;
      try {
        parser.push(chunk);
      } catch (err) {
        this.reset(`bad frame from sidecar: ${(err as ApmError).code ?? 'error'}`);
      }
    });
    s.on('drain', () => {
      if (s === this.#socket && this.#phase === 'ready') this.#handler.drain();
    });
    s.on('error', (err: NodeJS.ErrnoException) => {
      if (s === this.#socket) this.reset(err.code ?? err.message);
    });
    s.on('close', () => {
      if (s === this.#socket) this.reset('socket closed');
    });
  }

  #frame(s: Socket, type: number, payload: Buffer): void {
    if (s !== this.#socket) return;
    switch (type) {
      case MessageType.Welcome: {
        const w = decodeWelcome(payload);
        this.#phase = 'ready';
        this.#readyAt = Date.now();
        this.#handler.welcome(w);
        return;
      }
      case MessageType.StateChange:
        this.#handler.stateChange(decodeStateChange(payload));
        return;
      case MessageType.Ack:
        // u48 seq (see proto decodeAck); read here so the shim bundle needs no Reader.
        if (payload.length !== 6) throw new MalformedMessageError('ack must be 6 bytes');
        this.#handler.ack(payload.readUIntLE(0, 6));
        return;
      case MessageType.Error:
        this.#handler.sidecarError(decodeError(payload));
        return;
      default:
        throw new UnexpectedMessageError(`sidecar sent message type ${type}`);
    }
  }

  #armStallCheck(): void {
    this.#writesDoneAtCheck = this.#writesDone;
    this.#stallTimer = setTimeout(this.#checkStall, this.#opts.stallTimeoutMs);
    this.#stallTimer.unref();
  }

  #disarmStallCheck(): void {
    if (this.#stallTimer !== null) clearTimeout(this.#stallTimer);
    this.#stallTimer = null;
  }

  #teardown(): void {
    const s = this.#socket;
    // A connection that stayed up longer than the longest backoff was healthy: start the
    // backoff over. One that is welcomed and then dropped at once (a sidecar rejecting
    // what we send, or overloaded) keeps backing off instead of reconnecting in a tight loop.
    if (this.#phase === 'ready' && Date.now() - this.#readyAt >= this.#opts.reconnectMaxMs) this.#attempt = 0;
    this.#socket = null;
    this.#corked = false;
    process.removeListener('exit', this.uncork);
    this.#disarmStallCheck();
    if (s !== null) s.destroy();
    if (this.#phase !== 'closed') this.#phase = 'idle';
  }

  #schedule(): void {
    if (this.#phase === 'closed' || this.#timer !== null) return;
    const delay = backoffDelay(this.#attempt++, this.#opts.reconnectMinMs, this.#opts.reconnectMaxMs);
    this.#timer = setTimeout(() => {
      this.#timer = null;
      if (this.#phase === 'idle') this.#open();
    }, delay);
    this.#timer.unref();
  }
}
