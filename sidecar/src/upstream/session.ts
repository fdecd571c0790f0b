import type { EventEmitter } from 'node:events';
import { connect as tcpConnect } from 'node:net';
import { ApmError, FOREIGN_SAMPLE_BYTES, FrameParser, RemoteError, UnexpectedMessageError, foreignPeer } from '@apm-sidecar/proto';
import {
  type AccessKey,
  type AgentConfig,
  type AgentInfo,
  ClientHandshake,
  Direction,
  Inner,
  type LicenseGrant,
  Opener,
  Sealer,
  UpstreamType,
  decodeAgentConfig,
  decodeLicense,
  decodeUpAck,
  decodeUpError,
  encodeAgentInfo,
  encodePing,
  answerKeepalive,
  HandshakeError,
} from '@apm-sidecar/proto/upstream';
import { ConnectTimeoutError, NoLicenseError, ReadTimeoutError, UpstreamSocketError } from './errors';
import { naclImpl } from './nacl';

/** What the session needs of its carrier: a TCP socket or the HTTP tunnel. */
export interface Carrier extends EventEmitter {
  write(chunk: Buffer): boolean;
  destroy(): void;
  readonly writableLength: number;
}

/** Open a TCP carrier. */
export function dialTcp(host: string, port: number): Carrier {
  const s = tcpConnect({ host, port });
  s.setNoDelay(true);
  return s;
}

export interface SessionOptions {
  host: string;
  port: number;
  /** The carrier; TCP when not given. */
  dial?: (host: string, port: number) => Carrier;
  key: AccessKey;
  agentInfo: AgentInfo;
  connectTimeoutMs: number;
  soTimeoutMs: number;
  maxFrameBytes: number;
}

export interface SessionEvents {
  /** Handshake done, configuration and license received. */
  active(config: AgentConfig, license: LicenseGrant): void;
  /** Every agent frame with counter ≤ `counter` is stored by the collector. */
  ack(counter: number): void;
  /** The socket is writable again after backpressure. */
  drain(): void;
  /** The session is over (called once). `error` carries a typed code when there is one. */
  closed(cause: string, error: ApmError | null): void;
}

type Phase = 'connecting' | 'handshake' | 'configuring' | 'active' | 'closed';

/**
 * One upstream TCP session:
 *
 *   connect (tcp_connection_timeout) → ClientHello → ServerHello → ClientFinished
 *   → AgentInfo → Config + License → active: sealed data frames ⇄ acks, pings
 *
 * No bytes received for tcp_so_timeout closes it. When idle for a third of
 * that, it pings, so a healthy link never reaches the timeout.
 */
export class UpstreamSession {
  private readonly socket: Carrier;
  private phase: Phase = 'connecting';
  private handshake: ClientHandshake | null = null;
  private sealer: Sealer | null = null;
  private opener: Opener | null = null;
  private config: AgentConfig | null = null;
  private license: LicenseGrant | null = null;
  private connectTimer: NodeJS.Timeout | null = null;
  private idleTimer: NodeJS.Timeout | null = null;
  private lastReceived = Date.now();
  private lastSent = Date.now();
  /** The first bytes received (at most FOREIGN_SAMPLE_BYTES), to recognise a peer that speaks another protocol. */
  private head: Buffer = Buffer.alloc(0);
  bytesSent = 0;
  bytesReceived = 0;
  framesSent = 0;

  constructor(
    private readonly opts: SessionOptions,
    private readonly events: SessionEvents,
  ) {
    this.socket = (opts.dial ?? dialTcp)(opts.host, opts.port);
    // The ephemeral key pair is made while the TCP connection is being set up, not after.
    this.handshake = new ClientHandshake(naclImpl, opts.key, opts.agentInfo.agentId);
    this.connectTimer = setTimeout(
      () => this.close(`no connection to ${opts.host}:${opts.port} within ${opts.connectTimeoutMs} ms`, new ConnectTimeoutError(opts.connectTimeoutMs)),
      opts.connectTimeoutMs,
    );
    const parser = new FrameParser(opts.maxFrameBytes, (type, payload) => this.frame(type, payload));
    this.socket.on('connect', () => this.connected());
    this.socket.on('data', (chunk: Buffer) => {
      this.lastReceived = Date.now();
      this.bytesReceived += chunk.length;
      if (this.head.length < FOREIGN_SAMPLE_BYTES) this.head = Buffer.concat([this.head, chunk.subarray(0, FOREIGN_SAMPLE_BYTES - this.head.length)]);
      try {
        parser.push(chunk);
      } catch (err) {
        // Before any frame, bytes that read as text mean another protocol: say so rather than quote a frame size.
        const foreign = parser.frames === 0 ? foreignPeer(this.head) : null;
        if (foreign !== null) this.close(foreign.message, foreign);
        else this.close(`bad frame from the collector: ${(err as Error).message}`, err instanceof ApmError ? err : null);
      }
    });
    this.socket.on('drain', () => {
      if (this.phase === 'active') this.events.drain();
    });
    this.socket.on('error', (err: NodeJS.ErrnoException) => this.close(`${err.code ?? 'error'}: ${err.message}`, new UpstreamSocketError(err)));
    this.socket.on('close', () => this.close('connection closed by the collector', null));
  }

  /** The collector may still refuse in clear text: no sealed frame from it opened yet. */
  private get inHandshake(): boolean {
    return this.phase === 'handshake' || (this.phase === 'configuring' && (this.opener as Opener).last === 0);
  }

  get isActive(): boolean {
    return this.phase === 'active';
  }

  /** Bytes written to the socket but not yet flushed to the kernel. */
  get writableLength(): number {
    return this.socket.writableLength;
  }

  get address(): string {
    return `${this.opts.host}:${this.opts.port}`;
  }

  /** Seal and write a data message; returns the frame counter the collector will ack. */
  sendText(inner: number, body: Uint8Array): number {
    const frame = (this.sealer as Sealer).text(inner, body);
    this.write(frame);
    return (this.sealer as Sealer).last;
  }

  sendNumeric(inner: number, body: Uint8Array): number {
    const frame = (this.sealer as Sealer).numeric(inner, body);
    this.write(frame);
    return (this.sealer as Sealer).last;
  }

  close(cause: string, error: ApmError | null): void {
    if (this.phase === 'closed') return;
    this.phase = 'closed';
    if (this.connectTimer !== null) clearTimeout(this.connectTimer);
    if (this.idleTimer !== null) clearInterval(this.idleTimer);
    this.socket.destroy();
    this.events.closed(cause, error);
  }

  /** Write `frames` frames, already concatenated in `bytes`. */
  private write(bytes: Buffer, frames = 1): void {
    this.lastSent = Date.now();
    this.bytesSent += bytes.length;
    this.framesSent += frames;
    this.socket.write(bytes);
  }

  private connected(): void {
    if (this.phase !== 'connecting') return;
    if (this.connectTimer !== null) clearTimeout(this.connectTimer);
    this.connectTimer = null;
    this.phase = 'handshake';
    this.lastReceived = Date.now();
    const every = Math.max(10, Math.floor(this.opts.soTimeoutMs / 3));
    this.idleTimer = setInterval(() => this.idleCheck(), every);
    this.write((this.handshake as ClientHandshake).hello());
  }

  private idleCheck(): void {
    const now = Date.now();
    if (now - this.lastReceived >= this.opts.soTimeoutMs) {
      this.close(`nothing received for ${this.opts.soTimeoutMs} ms (tcp_so_timeout)`, new ReadTimeoutError(this.opts.soTimeoutMs));
      return;
    }
    if (this.sealer !== null && now - Math.max(this.lastSent, this.lastReceived) >= this.opts.soTimeoutMs / 3) {
      this.write(this.sealer.text(Inner.Ping, encodePing(now)));
    }
  }

  private frame(type: number, payload: Buffer): void {
    if (this.phase === 'closed') return;
    if (type === UpstreamType.HandshakeRejected) {
      // A clear-text refusal is possible only before the collector has sealed anything to us: later,
      // anyone on the path could forge one, so it is a protocol error instead.
      if (!this.inHandshake) throw new UnexpectedMessageError('HandshakeRejected after the handshake');
      const e = decodeUpError(payload);
      this.close(`the collector refused the handshake: ${e.message}`, new RemoteError(e.code, e.message));
      return;
    }
    if (this.phase === 'handshake') {
      if (type !== UpstreamType.ServerHello) throw new HandshakeError(`expected ServerHello, got frame type ${type}`);
      const { finished, keys } = (this.handshake as ClientHandshake).serverHello(payload);
      this.handshake = null;
      this.sealer = new Sealer(naclImpl, keys, Direction.AgentToCollector);
      this.opener = new Opener(naclImpl, keys, Direction.CollectorToAgent);
      // One write (one segment, one wake-up of the collector) for both.
      this.write(Buffer.concat([finished, this.sealer.text(Inner.AgentInfo, encodeAgentInfo(this.opts.agentInfo))]), 2);
      this.phase = 'configuring';
      return;
    }
    const m = (this.opener as Opener).open(type, payload);
    if (answerKeepalive(this.sealer as Sealer, m, (f) => this.write(f))) return;
    switch (m.inner) {
      case Inner.Config: {
        this.config = decodeAgentConfig(m.body);
        // A tunnel polls within a third of the collector's session timeout.
        const t = this.config.settings.tunnelSessionTimeoutMs;
        const carrier = this.socket as Carrier & { pollAtMost?: (ms: number) => void };
        if (typeof t === 'number' && carrier.pollAtMost !== undefined) carrier.pollAtMost(t / 3);
        break;
      }
      case Inner.License:
        this.license = decodeLicense(m.body);
        if (!this.license.granted) {
          this.close(`no license: ${this.license.reason}`, new NoLicenseError(this.license.reason));
          return;
        }
        break;
      case Inner.Ack:
        this.events.ack(decodeUpAck(m.body));
        return;
      case Inner.Error: {
        const e = decodeUpError(m.body);
        this.close(`the collector closed the session: ${e.message}`, new RemoteError(e.code, e.message));
        return;
      }
      default:
        throw new UnexpectedMessageError(`unexpected message ${m.inner} from the collector`);
    }
    if (this.phase === 'configuring' && this.config !== null && this.license !== null) {
      this.phase = 'active';
      this.events.active(this.config, this.license);
    }
  }
}
