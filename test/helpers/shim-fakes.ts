/**
 * Test doubles for shim tests, built on proto's codecs (no code from the sidecar):
 *
 *   FakeSidecar   a sidecar that welcomes shims, decodes everything they send,
 *                 and has switches: ack (withhold acks), read (hang: stop reading),
 *                 welcomeAckedSeq (what welcome.ackedSeq says), pushState, cut.
 *
 *   AckRelay      shim ──▶ relay.sock ──▶ real sidecar; the sidecar's replies pass
 *                 back except Ack frames while `swallowAcks`; `forgetWelcome` rewrites
 *                 welcome.ackedSeq to 0 (the shim then resends all it holds); cut()
 *                 drops both sides of every pair.
 */
import { rmSync } from 'node:fs';
import { type Server, type Socket, createConnection, createServer } from 'node:net';
import {
  DEFAULT_MAX_FRAME_BYTES,
  FrameParser,
  type Hello,
  MessageType,
  type ShimToSidecar,
  type SidecarState,
  decodeShimMessage,
  decodeWelcome,
  encodeAck,
  encodeStateChange,
  encodeWelcome,
  peekSeq,
} from '@apm-sidecar/proto';

export interface FakeFrame {
  conn: number;
  type: number;
  /** A copy of the frame payload, for byte-for-byte comparison of resends. */
  payload: Buffer;
  msg: ShimToSidecar;
  /** Durable kinds: the seq; else undefined. */
  seq: number | undefined;
}

export interface FakeConn {
  id: number;
  socket: Socket;
  hello: Hello | null;
  closed: boolean;
}

export class FakeSidecar {
  /** State sent in the welcome. */
  state: SidecarState = 'active';
  /** Ack durable frames (cumulative) as they arrive. */
  ack = true;
  /** Keep reading (false: a hung sidecar that never reads again after the welcome). */
  read = true;
  flushMs = 1000;
  /** welcome.ackedSeq; default: the highest seq acked to that instance. */
  welcomeAckedSeq: number | null = null;
  readonly conns: FakeConn[] = [];
  readonly frames: FakeFrame[] = [];
  /** Frames that did not decode (the real sidecar would close the connection). */
  readonly decodeErrors: string[] = [];
  private readonly ackedTo = new Map<string, number>();
  private readonly server: Server;

  private constructor(readonly path: string) {
    this.server = createServer((s) => this.accept(s));
  }

  static async start(path: string, setup?: (f: FakeSidecar) => void): Promise<FakeSidecar> {
    const f = new FakeSidecar(path);
    setup?.(f);
    rmSync(path, { force: true });
    await new Promise<void>((resolve, reject) => {
      f.server.once('error', reject);
      f.server.listen(path, resolve);
    });
    return f;
  }

  /** Connections that sent a hello. */
  get shims(): FakeConn[] {
    return this.conns.filter((c) => c.hello !== null);
  }

  get open(): FakeConn[] {
    return this.conns.filter((c) => !c.closed);
  }

  of(type: ShimToSidecar['type'], conn?: number): FakeFrame[] {
    return this.frames.filter((f) => f.msg.type === type && (conn === undefined || f.conn === conn));
  }

  pushState(state: SidecarState, cause = 'test'): void {
    this.state = state;
    const frame = encodeStateChange({ state, cause });
    for (const c of this.open) if (c.hello !== null) c.socket.write(frame);
  }

  /** Drop every connection (the shim sees the sidecar go away). */
  cut(): void {
    for (const c of this.open) {
      c.closed = true;
      c.socket.destroy();
    }
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(socket: Socket): void {
    const conn: FakeConn = { id: this.conns.length + 1, socket, hello: null, closed: false };
    this.conns.push(conn);
    const parser = new FrameParser(DEFAULT_MAX_FRAME_BYTES, (type, payload) => this.frame(conn, type, payload));
    socket.on('data', (chunk: Buffer) => {
      try {
        parser.push(chunk);
      } catch (err) {
        this.decodeErrors.push(`frame: ${(err as Error).message}`);
        socket.destroy();
      }
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      conn.closed = true;
    });
  }

  private frame(conn: FakeConn, type: number, payload: Buffer): void {
    let msg: ShimToSidecar;
    try {
      msg = decodeShimMessage(type, payload);
    } catch (err) {
      this.decodeErrors.push(`type ${type}: ${(err as Error).message}`);
      return;
    }
    const durable = type === MessageType.Metrics || type === MessageType.BtRegistration;
    this.frames.push({ conn: conn.id, type, payload: Buffer.from(payload), msg, seq: durable ? peekSeq(payload) : undefined });
    if (msg.type === 'Hello') {
      conn.hello = msg.body;
      const acked = this.welcomeAckedSeq ?? this.ackedTo.get(msg.body.instanceId) ?? 0;
      conn.socket.write(
        encodeWelcome({
          state: this.state,
          settings: { flushMs: this.flushMs, maxFrameBytes: DEFAULT_MAX_FRAME_BYTES },
          ackedSeq: acked,
          agentId: 'fake',
          sidecarVersion: '0.0.0-fake',
        }),
      );
      if (!this.read) conn.socket.pause();
      return;
    }
    if (durable && this.ack && conn.hello !== null) {
      const id = conn.hello.instanceId;
      const seq = peekSeq(payload);
      if (seq > (this.ackedTo.get(id) ?? 0)) this.ackedTo.set(id, seq);
      conn.socket.write(encodeAck(seq));
    }
  }
}

interface Pair {
  shim: Socket;
  upstream: Socket;
}

export class AckRelay {
  swallowAcks = false;
  forgetWelcome = false;
  acksSwallowed = 0;
  /** Durable seqs seen going to the sidecar, in order (duplicates included). */
  readonly durableSeqs: number[] = [];
  readonly pairs: Pair[] = [];
  private readonly server: Server;

  private constructor(
    readonly path: string,
    private readonly target: string,
  ) {
    this.server = createServer((s) => this.accept(s));
  }

  static async start(path: string, target: string): Promise<AckRelay> {
    const r = new AckRelay(path, target);
    rmSync(path, { force: true });
    await new Promise<void>((resolve, reject) => {
      r.server.once('error', reject);
      r.server.listen(path, resolve);
    });
    return r;
  }

  cut(): void {
    for (const p of this.pairs.splice(0)) {
      p.shim.destroy();
      p.upstream.destroy();
    }
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(shim: Socket): void {
    const upstream = createConnection({ path: this.target });
    const pair = { shim, upstream };
    this.pairs.push(pair);
    const end = () => {
      shim.destroy();
      upstream.destroy();
      const i = this.pairs.indexOf(pair);
      if (i >= 0) this.pairs.splice(i, 1);
    };
    shim.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    // shim → sidecar: bytes pass unchanged; a parser on the side notes durable seqs.
    const spy = new FrameParser(DEFAULT_MAX_FRAME_BYTES, (type, payload) => {
      if (type === MessageType.Metrics || type === MessageType.BtRegistration) this.durableSeqs.push(peekSeq(payload));
    });
    shim.on('data', (chunk: Buffer) => {
      spy.push(chunk);
      upstream.write(chunk);
    });
    // sidecar → shim: re-framed so acks can be swallowed and the welcome rewritten.
    const back = new FrameParser(DEFAULT_MAX_FRAME_BYTES, (type, payload) => {
      if (type === MessageType.Ack && this.swallowAcks) {
        this.acksSwallowed++;
        return;
      }
      if (type === MessageType.Welcome && this.forgetWelcome) {
        shim.write(encodeWelcome({ ...decodeWelcome(payload), ackedSeq: 0 }));
        return;
      }
      const frame = Buffer.allocUnsafe(payload.length + 5);
      frame.writeUInt32LE(payload.length + 1, 0);
      frame[4] = type;
      payload.copy(frame, 5);
      shim.write(frame);
    });
    upstream.on('data', (chunk: Buffer) => back.push(chunk));
  }
}
