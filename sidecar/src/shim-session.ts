import type { Socket } from 'node:net';
import {
  ApmError,
  FrameParser,
  type Hello,
  MessageType,
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

/** What a session needs from the sidecar; keeps sessions free of global state. */
export interface SessionHost {
  readonly maxFrameBytes: number;
  readonly seriesCache: Map<string, Series>;
  /** Returns the Welcome frame for this shim. */
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
  hello: Hello | null = null;
  frames = 0;
  bytes = 0;
  ackedSeq = 0;
  private readonly parser: FrameParser;
  private corked = false;
  private closed = false;
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
  }

  ack(seq: number): void {
    this.ackedSeq = seq;
    this.send(encodeAck(seq));
  }

  /** Close with a typed error sent to the peer first. */
  fail(err: ApmError): void {
    if (this.closed) return;
    this.host.protocolError(this, err);
    this.send(encodeError({ code: err.code, message: err.message }));
    this.closed = true;
    if (this.corked) this.uncork();
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }

  private data(chunk: Buffer): void {
    if (this.closed) return;
    this.lastSeenAt = Date.now();
    this.bytes += chunk.length;
    try {
      this.parser.push(chunk);
    } catch (err) {
      this.fail(err instanceof ApmError ? err : new ApmError('ERR_INTERNAL', String(err)));
    }
  }

  private frame(type: number, payload: Buffer): void {
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
      this.hello = msg.body;
      this.send(this.host.hello(this, msg.body));
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
