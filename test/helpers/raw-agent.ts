import { EventEmitter } from 'node:events';
import { request } from 'node:http';
import { connect } from 'node:net';
import { FrameParser, MetricKind, type MetricPoint, encodeSeries } from '@apm-sidecar/proto';
import {
  type AccessKey,
  type AgentInfo,
  ClientHandshake,
  Direction,
  Inner,
  type LicenseGrant,
  Opener,
  Sealer,
  UpstreamType,
  decodeLicense,
  decodePing,
  decodeUpAck,
  decodeUpError,
  encodeAgentInfo,
  encodeMetricBatch,
  encodePing,
} from '@apm-sidecar/proto/upstream';
import nacl from 'tweetnacl';

/**
 * An agent driven by the test on the real upstream protocol (proto's handshake and sealing) over
 * a real TCP socket: it connects, proves its key, sends AgentInfo, and records what the collector
 * sends. It answers pings only while `answerPings` is true, so a test decides whether the link
 * looks alive.
 */
/** What the agent writes to and reads from: a TCP socket, or a ManualTunnel. */
export interface RawCarrier extends EventEmitter {
  write(chunk: Buffer): unknown;
  destroy(): void;
}

export class RawAgent {
  readonly sock: RawCarrier;
  /** The timestamps carried by the collector's pings, in arrival order. */
  readonly pings: number[] = [];
  /** The counters the collector acked (every agent frame at or below is stored). */
  readonly acks: number[] = [];
  /** Sealed errors the collector sent. */
  readonly errors: { code: string; message: string }[] = [];
  license: LicenseGrant | null = null;
  answerPings = true;
  closed = false;
  private sealer: Sealer | null = null;
  private packs = 0;

  /** Over TCP to `port`, or over the carrier given (it emits 'connect' when ready); `info` adds to its AgentInfo. */
  constructor(
    port: number,
    key: AccessKey,
    readonly agentId: string,
    carrier?: RawCarrier,
    info: Partial<AgentInfo> = {},
  ) {
    const hs = new ClientHandshake(nacl, key, agentId);
    let opener: Opener | null = null;
    const parser = new FrameParser(1 << 24, (type, payload) => {
      if (type === UpstreamType.ServerHello) {
        const { finished, keys } = hs.serverHello(payload);
        this.sealer = new Sealer(nacl, keys, Direction.AgentToCollector);
        opener = new Opener(nacl, keys, Direction.CollectorToAgent);
        this.sock.write(finished);
        this.sock.write(this.sealer.text(Inner.AgentInfo, encodeAgentInfo({ agentId, host: 'raw', version: 'test', apps: ['raw'], ...info })));
        return;
      }
      if (opener === null) return;
      const m = opener.open(type, payload);
      if (m.inner === Inner.License) this.license = decodeLicense(m.body);
      if (m.inner === Inner.Ack) this.acks.push(decodeUpAck(m.body));
      if (m.inner === Inner.Error) this.errors.push(decodeUpError(m.body));
      if (m.inner === Inner.Ping) {
        const ts = decodePing(m.body);
        this.pings.push(ts);
        if (this.answerPings) this.sock.write((this.sealer as Sealer).text(Inner.Pong, encodePing(ts)));
      }
    });
    this.sock = carrier ?? connect({ host: '127.0.0.1', port });
    this.sock.on('data', (d) => parser.push(d));
    this.sock.on('error', () => {});
    this.sock.on('close', () => {
      this.closed = true;
    });
    this.sock.once('connect', () => this.sock.write(hs.hello()));
  }

  /** ServerHello received: ClientFinished and AgentInfo are sent. */
  get sealed(): boolean {
    return this.sealer !== null;
  }

  /** One metric pack (no points): data, as far as liveness is concerned. */
  sendData(at: number): void {
    this.sendPack(`${this.agentId}-${++this.packs}`, at, []);
  }

  /** One metric pack with one counter point per value, each its own series `name{i}`. */
  sendPack(packId: string, intervalStart: number, values: number[], name = 'raw.n'): void {
    this.sock.write(this.packFrame(packId, intervalStart, values, name));
  }

  /** The sealed frame sendPack would write (to send it in pieces, as a slow link delivers it). */
  packFrame(packId: string, intervalStart: number, values: number[], name = 'raw.n'): Buffer {
    const points: MetricPoint[] = values.map((v, i) => {
      const tags = { i: String(i) };
      const series = { key: encodeSeries(MetricKind.Counter, name, tags).toString('latin1'), kind: MetricKind.Counter, name, tags };
      return { series, count: 1, sum: v, min: v, max: v, last: Number.NaN, sketch: null };
    });
    return (this.sealer as Sealer).text(Inner.MetricBatch, encodeMetricBatch([{ packId, intervalStart, intervalMs: 1000, points }]));
  }

  destroy(): void {
    this.sock.destroy();
  }
}

/**
 * The agents' HTTP tunnel driven by hand: bytes written are held until `post()` sends them as
 * one request, and its response body is read back as received bytes. No polling: the test
 * decides when the collector hears from the agent.
 */
export class ManualTunnel extends EventEmitter implements RawCarrier {
  private pending: Buffer[] = [];
  private sid: string | null = null;
  private closed = false;

  constructor(private readonly port: number) {
    super();
    process.nextTick(() => this.emit('connect'));
  }

  write(chunk: Buffer): boolean {
    this.pending.push(chunk);
    return true;
  }

  destroy(): void {
    if (this.closed) return;
    this.closed = true;
    this.emit('close');
  }

  /** One tunnel request with what was written since the last; resolves with the HTTP status. */
  post(): Promise<number> {
    const body = Buffer.concat(this.pending);
    this.pending = [];
    const headers: Record<string, string> = { 'content-type': 'application/octet-stream' };
    if (this.sid !== null) headers['apm-tunnel-session'] = this.sid;
    return new Promise((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: this.port, method: 'POST', path: '/agent/tunnel', headers }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const sid = res.headers['apm-tunnel-session'];
          if (typeof sid === 'string') this.sid = sid;
          if (res.statusCode === 200 && chunks.length > 0) this.emit('data', Buffer.concat(chunks));
          resolve(res.statusCode ?? 0);
        });
      });
      req.on('error', reject);
      req.end(body);
    });
  }
}
