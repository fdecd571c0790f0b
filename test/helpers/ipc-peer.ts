import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { type Socket, createConnection } from 'node:net';
import {
  type ErrorMessage,
  FrameParser,
  MessageType,
  PROTOCOL_VERSION,
  type Series,
  decodeAck,
  decodeError,
  encodeFrame,
  encodeMetrics,
} from '@apm-sidecar/proto';

/**
 * A hostile (or merely raw) IPC peer speaking the frame protocol by hand: it can
 * claim any instance id with any secret and seq, and can stop reading.
 */
export class HostilePeer {
  readonly frames: { type: number; payload: Buffer }[] = [];
  closed = false;
  readonly socket: Socket;
  readonly ready: Promise<void>;
  readonly closedAt: Promise<number>;

  constructor(path: string) {
    this.socket = createConnection({ path });
    const parser = new FrameParser(16 << 20, (type, payload) => this.frames.push({ type, payload: Buffer.from(payload) }));
    this.socket.on('data', (c) => parser.push(c));
    this.closedAt = new Promise((r) =>
      this.socket.on('close', () => {
        this.closed = true;
        r(Date.now());
      }),
    );
    this.socket.on('error', () => {});
    this.ready = new Promise((r) => this.socket.once('connect', () => r()));
  }

  /** A Hello as JSON, so any field (or none) can be sent. */
  hello(fields: { instanceId: string; secret?: string; seq?: number; app?: string }): void {
    const body = {
      v: PROTOCOL_VERSION,
      app: fields.app ?? 'hostile',
      pid: process.pid,
      shimVersion: 'hostile',
      secret: randomBytes(32).toString('hex'),
      seq: 0,
      ...fields,
    };
    this.socket.write(encodeFrame(MessageType.Hello, Buffer.from(JSON.stringify(body))));
  }

  of(type: number): { type: number; payload: Buffer }[] {
    return this.frames.filter((f) => f.type === type);
  }

  acks(): number[] {
    return this.of(MessageType.Ack).map((f) => decodeAck(f.payload));
  }

  errors(): ErrorMessage[] {
    return this.of(MessageType.Error).map((f) => decodeError(f.payload));
  }
}

const series = (name: string): Series => ({ key: '', kind: 0, name, tags: {} });

/** A metrics frame with one counter point of `sum`. */
export function metricsFrame(seq: number, name: string, sum: number): Buffer {
  return encodeMetrics({
    seq,
    ts: Date.now(),
    windowMs: 50,
    points: [{ series: series(name), count: 1, sum, min: sum, max: sum, last: Number.NaN, sketch: null }],
  });
}

/** Resident set size of a process in MiB (Linux /proc). */
export function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m === null ? 0 : Number(m[1]) / 1024;
}
