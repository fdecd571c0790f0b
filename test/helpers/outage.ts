/**
 * Tools for the disconnected-behaviour tests: a gate that makes the collector
 * unreachable for one sidecar (or loses its acks), a collector stand-in that
 * records what arrives in arrival order, a raw IPC client, and status helpers.
 */
import { randomBytes } from 'node:crypto';
import { type AddressInfo, type Server, type Socket, createConnection, createServer, connect as tcpConnect } from 'node:net';
import { FrameParser, MessageType, PROTOCOL_VERSION, decodeAck, encodeHello } from '@apm-sidecar/proto';
import {
  Direction,
  Inner,
  Opener,
  Sealer,
  ServerHandshake,
  UpstreamType,
  decodeMetricBatch,
  decodeTextBatch,
  encodeAgentConfig,
  encodeLicense,
  encodeUpAck,
  formatAccessKey,
  readClientHello,
} from '@apm-sidecar/proto/upstream';
import { requestControl, requestStatus } from '@apm-sidecar/sidecar/dist/status-client';
import nacl from 'tweetnacl';

/** `apm-sidecar status` answered in-process over the sidecar's socket (the CLI's own client). */
export async function sidecarStatus(socket: string): Promise<Record<string, any>> {
  return (await requestStatus(socket)) as Record<string, unknown>;
}

export function sidecarControl(socket: string, command: string): Promise<{ ok: boolean; message: string }> {
  return requestControl(socket, command);
}

function listen(server: Server, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

/**
 * A TCP gate in front of the collector for one sidecar.
 *
 *   open()          forward both ways
 *   open('no-acks') forward the handshake, configuration and license, then drop
 *                   everything the collector sends (acks, pings): the collector stores
 *                   what arrives, the sidecar never learns it
 *   cut()           every connection is destroyed and new ones are refused (the
 *                   listening socket is closed): the collector is unreachable
 */
export class Gate {
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();
  private mode: 'open' | 'no-acks' = 'open';
  port = 0;
  accepted = 0;
  droppedFromCollector = 0;

  constructor(private readonly targetPort: number) {}

  async open(mode: 'open' | 'no-acks' = 'open'): Promise<number> {
    this.mode = mode;
    if (this.server !== null) return this.port;
    const server = createServer((client) => this.accept(client));
    this.server = server;
    this.port = await listen(server, this.port);
    return this.port;
  }

  async cut(): Promise<void> {
    const s = this.server;
    this.server = null;
    for (const x of this.sockets) x.destroy();
    this.sockets.clear();
    if (s !== null) await new Promise<void>((r) => s.close(() => r()));
  }

  private accept(client: Socket): void {
    this.accepted++;
    const mode = this.mode;
    const upstream = tcpConnect({ host: '127.0.0.1', port: this.targetPort });
    this.sockets.add(client);
    this.sockets.add(upstream);
    client.on('data', (d: Buffer) => upstream.write(d));
    if (mode === 'open') {
      upstream.on('data', (d: Buffer) => client.write(d));
    } else {
      // Frames are u32le length | u8 type | payload: pass all but the sealed text frames after the first two.
      let buf = Buffer.alloc(0);
      let texts = 0;
      upstream.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        while (buf.length >= 5) {
          const len = buf.readUInt32LE(0);
          if (buf.length < 4 + len) break;
          const frame = buf.subarray(0, 4 + len);
          buf = buf.subarray(4 + len);
          if (frame[4] !== UpstreamType.Text || texts++ < 2) client.write(frame);
          else this.droppedFromCollector++;
        }
      });
    }
    const end = () => {
      client.destroy();
      upstream.destroy();
      this.sockets.delete(client);
      this.sockets.delete(upstream);
    };
    for (const s of [client, upstream]) {
      s.on('close', end);
      s.on('error', end);
    }
  }
}

export interface Received {
  /** Data frame number on the session (1-based, in arrival order). */
  frame: number;
  kind: 'metrics' | 'btRegistration' | 'event' | 'snapshot' | 'trace' | 'activeStack';
  /** Metric pack id, registration name, event message or trace name. */
  label: string;
  /** Metric packs: the names of their points. */
  names?: string[];
}

/**
 * The collector side of the real upstream protocol (handshake, sealed frames,
 * configuration, license, acks), recording every item in the order it arrives.
 * Used where the order of arrival is the thing under test: the real collector
 * does not keep it for every kind.
 */
export class RecordingCollector {
  readonly projectId = `rec-${randomBytes(3).toString('hex')}`;
  private readonly secret = randomBytes(32);
  readonly key = formatAccessKey({ projectId: this.projectId, secret: this.secret });
  readonly received: Received[] = [];
  sessions = 0;
  /** True for a data frame (1-based, over all sessions) this collector fails to store: neither recorded nor acked. */
  lose: (frame: number) => boolean = () => false;
  private frames = 0;
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();
  port = 0;

  async open(): Promise<number> {
    if (this.server !== null) return this.port;
    const server = createServer((s) => this.accept(s));
    this.server = server;
    this.port = await listen(server, this.port);
    return this.port;
  }

  async cut(): Promise<void> {
    const s = this.server;
    this.server = null;
    for (const x of this.sockets) x.destroy();
    this.sockets.clear();
    if (s !== null) await new Promise<void>((r) => s.close(() => r()));
  }

  private accept(sock: Socket): void {
    this.sockets.add(sock);
    sock.on('error', () => sock.destroy());
    sock.on('close', () => this.sockets.delete(sock));
    let hs: ServerHandshake | null = null;
    let sealer: Sealer | null = null;
    let opener: Opener | null = null;
    const parser = new FrameParser(1 << 24, (type, payload) => {
      if (type === UpstreamType.ClientHello) {
        const hello = readClientHello(Buffer.from(payload));
        hs = new ServerHandshake(nacl, hello, this.secret);
        sock.write(hs.serverHello());
        return;
      }
      if (type === UpstreamType.ClientFinished) {
        const keys = (hs as ServerHandshake).clientFinished(Buffer.from(payload));
        sealer = new Sealer(nacl, keys, Direction.CollectorToAgent);
        opener = new Opener(nacl, keys, Direction.AgentToCollector);
        return;
      }
      const m = (opener as Opener).open(type, Buffer.from(payload));
      const s = sealer as Sealer;
      switch (m.inner) {
        case Inner.AgentInfo:
          this.sessions++;
          sock.write(s.text(Inner.Config, encodeAgentConfig({ configVersion: 1, settings: {} })));
          sock.write(s.text(Inner.License, encodeLicense({ granted: true, reason: 'recording collector' })));
          return;
        case Inner.MetricBatch: {
          const frame = ++this.frames;
          if (this.lose(frame)) return;
          for (const p of decodeMetricBatch(m.body)) this.received.push({ frame, kind: 'metrics', label: p.packId, names: p.points.map((x) => x.series.name) });
          sock.write(s.text(Inner.Ack, encodeUpAck(m.counter)));
          return;
        }
        case Inner.TextBatch: {
          const frame = ++this.frames;
          if (this.lose(frame)) return;
          for (const it of decodeTextBatch(m.body)) {
            const label =
              it.kind === 'btRegistration'
                ? it.name
                : it.kind === 'event'
                  ? it.event.message
                  : it.kind === 'snapshot'
                    ? it.snapshot.kind
                    : it.kind === 'trace'
                      ? it.trace.name
                      : it.stack.name;
            this.received.push({ frame, kind: it.kind, label });
          }
          sock.write(s.text(Inner.Ack, encodeUpAck(m.counter)));
          return;
        }
        case Inner.Ping:
          sock.write(s.text(Inner.Pong, m.body));
          return;
        default:
          return;
      }
    });
    sock.on('data', (d: Buffer) => {
      try {
        parser.push(d);
      } catch {
        sock.destroy();
      }
    });
  }
}

/** A client speaking the IPC protocol frame by frame (what an old or racing shim could send). */
export class RawIpcClient {
  readonly socket: Socket;
  readonly ready: Promise<void>;
  ackedSeq = 0;

  constructor(path: string, instanceId: string, app = 'raw') {
    this.socket = createConnection({ path });
    const parser = new FrameParser(1 << 20, (type, payload) => {
      if (type === MessageType.Ack) this.ackedSeq = Math.max(this.ackedSeq, decodeAck(Buffer.from(payload)));
    });
    this.socket.on('data', (c: Buffer) => parser.push(c));
    this.socket.on('error', () => {});
    this.ready = new Promise((r) =>
      this.socket.once('connect', () => {
        this.socket.write(
          encodeHello({
            v: PROTOCOL_VERSION,
            app,
            pid: process.pid,
            shimVersion: 'raw',
            instanceId,
            secret: `secret-of-${instanceId}`.padEnd(32, '.'),
            seq: 0,
          }),
        );
        r();
      }),
    );
  }

  send(frame: Buffer): void {
    this.socket.write(frame);
  }

  close(): void {
    this.socket.destroy();
  }
}
