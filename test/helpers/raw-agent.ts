import { type Socket, connect } from 'node:net';
import { FrameParser, MetricKind, type MetricPoint, encodeSeries } from '@apm-sidecar/proto';
import {
  type AccessKey,
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
export class RawAgent {
  readonly sock: Socket;
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

  constructor(port: number, key: AccessKey, readonly agentId: string) {
    const hs = new ClientHandshake(nacl, key, agentId);
    let opener: Opener | null = null;
    const parser = new FrameParser(1 << 24, (type, payload) => {
      if (type === UpstreamType.ServerHello) {
        const { finished, keys } = hs.serverHello(payload);
        this.sealer = new Sealer(nacl, keys, Direction.AgentToCollector);
        opener = new Opener(nacl, keys, Direction.CollectorToAgent);
        this.sock.write(finished);
        this.sock.write(this.sealer.text(Inner.AgentInfo, encodeAgentInfo({ agentId, host: 'raw', version: 'test', apps: ['raw'] })));
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
    this.sock = connect({ host: '127.0.0.1', port });
    this.sock.on('data', (d) => parser.push(d));
    this.sock.on('error', () => {});
    this.sock.on('close', () => {
      this.closed = true;
    });
    this.sock.once('connect', () => this.sock.write(hs.hello()));
  }

  /** One metric pack (no points): data, as far as liveness is concerned. */
  sendData(at: number): void {
    this.sendPack(`${this.agentId}-${++this.packs}`, at, []);
  }

  /** One metric pack with one counter point per value, each its own series `name{i}`. */
  sendPack(packId: string, intervalStart: number, values: number[], name = 'raw.n'): void {
    const points: MetricPoint[] = values.map((v, i) => {
      const tags = { i: String(i) };
      const series = { key: encodeSeries(MetricKind.Counter, name, tags).toString('latin1'), kind: MetricKind.Counter, name, tags };
      return { series, count: 1, sum: v, min: v, max: v, last: Number.NaN, sketch: null };
    });
    this.sock.write((this.sealer as Sealer).text(Inner.MetricBatch, encodeMetricBatch([{ packId, intervalStart, intervalMs: 1000, points }])));
  }

  destroy(): void {
    this.sock.destroy();
  }
}
