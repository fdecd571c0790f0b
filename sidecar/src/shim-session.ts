import type { Socket } from 'node:net';
import {
  ApmError,
  InternalError,
  FrameParser,
  type Hello,
  HelloTimeoutError,
  MessageType,
  PeerNotReadingError,
  SeqJumpError,
  type Series,
  type ShimToSidecar,
  UnexpectedMessageError,
  decodeControl,
  decodeShimMessage,
  peekSeq,
  encodeAck,
  encodeControlResult,
  encodeError,
  encodeStatusResponse,
  type ControlResult,
} from '@apm-sidecar/proto';

/** What the session keeps of a Hello: everything but the secret. */
export type ShimIdentity = Omit<Hello, 'secret'>;

/** Bounds every IPC peer lives with, shim or not. */
export interface PeerLimits {
  /** A connection that has not sent Hello this long after accepting is closed. */
  helloTimeoutMs: number;
  /** Bytes of replies a peer may leave unread before it is disconnected. */
  maxUnreadBytes: number;
}

/**
 * How far past the highest seq a shim could have sent a durable seq may be.
 * The shim sends its durable frames in seq order and declares its highest
 * assigned seq in Hello, so a gap on one connection only comes from frames it
 * evicted unwritten while the socket was congested. A shim that ever exceeded
 * this would lose nothing: the frame is not acked, and its next Hello declares
 * the seq, which raises the ceiling.
 */
export const MAX_SEQ_JUMP = 1_000_000;

/** What a session needs from the sidecar; keeps sessions free of global state. */
export interface SessionHost {
  readonly maxFrameBytes: number;
  readonly seriesCache: Map<string, Series>;
  readonly peerLimits: PeerLimits;
  /** Returns the Welcome frame for this shim, or throws a typed error to refuse it. */
  hello(session: ShimSession, hello: Hello): Buffer;
  /** A decoded message; `payload` is a view valid only during the call (copy to keep). */
  message(session: ShimSession, msg: ShimToSidecar, payload: Buffer): void;
  status(): unknown;
  control(command: string): Promise<ControlResult>;
  /** A frame or message failed: counted by code; the connection is closed after this. */
  protocolError(session: ShimSession, err: ApmError): void;
  closed(session: ShimSession): void;
}

let nextId = 1;

/**
 * One accepted connection: a shim (after Hello) or a CLI asking for status.
 * Parses frames incrementally; any malformed frame closes this connection only.
 */
export class ShimSession {
  readonly id = nextId++;
  readonly connectedAt = Date.now();
  lastSeenAt = Date.now();
  hello: ShimIdentity | null = null;
  frames = 0;
  bytes = 0;
  ackedSeq = 0;
  /** Highest seq this shim could have sent so far: its Hello's seq, raised by every seq accepted. */
  private seqCeiling = 0;
  private readonly parser: FrameParser;
  private corked = false;
  private closed = false;
  private helloTimer: NodeJS.Timeout | null;
  private readonly uncork = (): void => {
    this.corked = false;
    this.socket.uncork();
  };

  constructor(
    readonly socket: Socket,
    private readonly host: SessionHost,
  ) {
    this.parser = new FrameParser(host.maxFrameBytes, (type, payload) => this.frame(type, payload));
    socket.on('data', (chunk: Buffer) => this.data(chunk));
    socket.on('end', () => this.end());
    socket.on('error', () => {
      // 'close' follows; a reset from a killed app is not an error of ours.
    });
    socket.on('close', () => this.close());
    const ms = host.peerLimits.helloTimeoutMs;
    this.helloTimer = setTimeout(() => this.fail(new HelloTimeoutError(ms)), ms);
  }

  get isShim(): boolean {
    return this.hello !== null;
  }

  /** Queue a frame; frames written in one tick leave in one writev. */
  send(frame: Buffer): void {
    if (this.closed || this.socket.destroyed) return;
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(this.uncork);
    }
    this.socket.write(frame);
    // A peer that does not read would make us hold every reply in memory.
    const unread = this.socket.writableLength;
    if (unread > this.host.peerLimits.maxUnreadBytes) this.abort(new PeerNotReadingError(unread, this.host.peerLimits.maxUnreadBytes));
  }

  ack(seq: number): void {
    this.ackedSeq = seq;
    this.send(encodeAck(seq));
  }

  /** Close with a typed error sent to the peer first. */
  fail(err: ApmError): void {
    if (this.closed) return;
    this.clearHelloTimer();
    this.host.protocolError(this, err);
    this.send(encodeError({ code: err.code, message: err.message }));
    this.closed = true;
    if (this.corked) this.uncork();
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }

  /** Counted like fail(), but cut at once: the peer would not read an error frame either. */
  private abort(err: ApmError): void {
    if (this.closed) return;
    this.closed = true;
    this.clearHelloTimer();
    this.host.protocolError(this, err);
    this.socket.destroy();
  }

  private clearHelloTimer(): void {
    if (this.helloTimer !== null) clearTimeout(this.helloTimer);
    this.helloTimer = null;
  }

  private data(chunk: Buffer): void {
    if (this.closed) return;
    this.lastSeenAt = Date.now();
    this.bytes += chunk.length;
    try {
      this.parser.push(chunk);
    } catch (err) {
      this.fail(err instanceof ApmError ? err : new InternalError(String(err)));
    }
  }

  private frame(type: number, payload: Buffer): void {
    // The rest of a chunk after this connection was closed is not looked at.
    if (this.closed) return;
    this.frames++;
    if (this.hello === null) {
      if (type === MessageType.StatusRequest) {
        this.send(encodeStatusResponse(this.host.status()));
        return;
      }
      if (type === MessageType.Control) {
        const cmd = decodeControl(payload);
        void this.host.control(cmd.command).then((r) => this.send(encodeControlResult(r)));
        return;
      }
      const msg = decodeShimMessage(type, payload, this.host.seriesCache);
      if (msg.type !== 'Hello') throw new UnexpectedMessageError(`first message must be Hello, got ${msg.type}`);
      // Throws (and the connection is closed) when the host refuses this instance.
      const welcome = this.host.hello(this, msg.body);
      const { secret: _secret, ...identity } = msg.body;
      this.hello = identity;
      this.seqCeiling = identity.seq;
      this.clearHelloTimer();
      this.send(welcome);
      return;
    }
    let msg: ShimToSidecar;
    try {
      msg = decodeShimMessage(type, payload, this.host.seriesCache);
    } catch (err) {
      // A durable frame that will never decode: ack its seq before closing, or the shim
      // would resend it after every reconnect, forever. It is counted with its error code.
      if ((type === MessageType.Metrics || type === MessageType.BtRegistration) && payload.length >= 6) this.ack(peekSeq(payload));
      throw err;
    }
    if (msg.type === 'Hello') throw new UnexpectedMessageError('Hello sent twice');
    if (msg.type === 'Metrics' || msg.type === 'BtRegistration') {
      const seq = msg.body.seq;
      if (seq > this.seqCeiling + MAX_SEQ_JUMP) throw new SeqJumpError(seq, this.seqCeiling, MAX_SEQ_JUMP);
      if (seq > this.seqCeiling) this.seqCeiling = seq;
    }
    this.host.message(this, msg, payload);
  }

  private end(): void {
    // The peer finished writing: a partial frame left over was cut off (e.g. the app was killed mid-write).
    if (this.closed) return;
    try {
      this.parser.end();
    } catch (err) {
      this.host.protocolError(this, err as ApmError);
    }
    this.socket.end();
  }

  private close(): void {
    this.clearHelloTimer();
    if (!this.closed) {
      this.closed = true;
      try {
        this.parser.end();
      } catch (err) {
        this.host.protocolError(this, err as ApmError);
      }
    }
    this.host.closed(this);
  }
}
