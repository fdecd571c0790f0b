import assert from 'node:assert/strict';
import { type Socket, createConnection } from 'node:net';
import { after, before, describe, test } from 'node:test';
import {
  FrameParser,
  MessageType,
  PROTOCOL_VERSION,
  decodeAck,
  decodeError,
  decodeWelcome,
  encodeEvent,
  encodeHello,
  encodeMetrics,
  encodeFrame,
  type Series,
} from '@apm-sidecar/proto';
import { connect } from '@apm-sidecar/shim';
import { type SidecarProc, runCli, startSidecar, tempDir, totalCount, waitFor } from '../helpers/procs';

/** A raw client built on the proto codecs, recording what the sidecar sends back. */
class RawClient {
  readonly frames: { type: number; payload: Buffer }[] = [];
  closed = false;
  readonly socket: Socket;
  readonly ready: Promise<void>;

  constructor(path: string) {
    this.socket = createConnection({ path });
    const parser = new FrameParser(1 << 20, (type, payload) => this.frames.push({ type, payload: Buffer.from(payload) }));
    this.socket.on('data', (c) => parser.push(c));
    this.socket.on('close', () => {
      this.closed = true;
    });
    this.socket.on('error', () => {});
    this.ready = new Promise((r) => this.socket.once('connect', () => r()));
  }

  hello(instanceId: string): void {
    this.socket.write(
      encodeHello({
        v: PROTOCOL_VERSION,
        app: 'raw',
        pid: process.pid,
        shimVersion: 'test',
        instanceId,
        secret: `secret-of-${instanceId}`.padEnd(32, '.'),
        seq: 0,
      }),
    );
  }

  of(type: number) {
    return this.frames.filter((f) => f.type === type);
  }
}

const series = (name: string): Series => ({ key: '', kind: 0, name, tags: {} });
const metrics = (seq: number, name: string, sum: number) =>
  encodeMetrics({ seq, ts: Date.now(), windowMs: 50, points: [{ series: series(name), count: 1, sum, min: sum, max: sum, last: Number.NaN, sketch: null }] });

async function ipcErrors(socket: string): Promise<Record<string, number>> {
  const r = await runCli(['status', '--json', '--socket', socket]);
  return JSON.parse(r.stdout).counters.ipcErrors;
}

describe('sidecar protocol handling over a real socket', () => {
  const tmp = tempDir();
  let sc: SidecarProc;
  before(async () => {
    sc = await startSidecar(tmp.dir, ['--set', 'flush_ms=50', '--set', 'metric_interval_ms=200', '--set', 'ipc_max_frame_bytes=65536']);
  });
  after(async () => {
    await sc.kill('SIGTERM');
    tmp.cleanup();
  });

  async function expectClosedWith(c: RawClient, code: string): Promise<void> {
    await waitFor(`the connection to close with ${code}`, () => c.closed);
    const errs = c.of(MessageType.Error).map((f) => decodeError(f.payload));
    assert.equal(errs.length, 1);
    assert.equal(errs[0]?.code, code);
  }

  test('answers hello with welcome, acks a durable frame, and de-duplicates a resent seq', async () => {
    const c = new RawClient(sc.socket);
    await c.ready;
    c.hello('dedup-1');
    c.socket.write(metrics(1, 'dedup.x', 5));
    c.socket.write(metrics(1, 'dedup.x', 5));
    c.socket.write(metrics(2, 'dedup.x', 7));
    await waitFor('three acks', () => c.of(MessageType.Ack).length === 3);
    assert.deepEqual(
      c.of(MessageType.Ack).map((f) => decodeAck(f.payload)),
      [1, 1, 2],
    );
    assert.equal(decodeWelcome((c.of(MessageType.Welcome)[0] as { payload: Buffer }).payload).ackedSeq, 0);
    assert.equal(
      decodeWelcome((c.of(MessageType.Welcome)[0] as { payload: Buffer }).payload).settings.bufferBytes,
      8388608,
      'shim_buffer_bytes is pushed to shims',
    );
    c.socket.end();

    // A new connection of the same instance learns what was committed.
    const again = new RawClient(sc.socket);
    await again.ready;
    again.hello('dedup-1');
    await waitFor('welcome', () => again.of(MessageType.Welcome).length === 1);
    assert.equal(decodeWelcome((again.of(MessageType.Welcome)[0] as { payload: Buffer }).payload).ackedSeq, 2);
    again.socket.write(metrics(2, 'dedup.x', 7));
    await waitFor('ack', () => again.of(MessageType.Ack).length === 1);
    again.socket.end();

    await waitFor('the points to be emitted', () => totalCount(sc, 'dedup.x') === 2);
    await new Promise((r) => setTimeout(r, 400));
    const sum = sc
      .packs('metrics')
      .flatMap((p) => p.points as any[])
      .filter((p) => p.name === 'dedup.x')
      .reduce((a, p) => a + p.sum, 0);
    assert.equal(sum, 12, 'each seq counted once');
  });

  test('ERR_FRAME_TOO_LARGE: a header over ipc_max_frame_bytes closes that connection at once', async () => {
    const c = new RawClient(sc.socket);
    await c.ready;
    c.hello('big');
    const header = Buffer.alloc(4);
    header.writeUInt32LE(65537, 0);
    c.socket.write(header);
    await expectClosedWith(c, 'ERR_FRAME_TOO_LARGE');
  });

  test('ERR_FRAME_EMPTY: a zero-length frame', async () => {
    const c = new RawClient(sc.socket);
    await c.ready;
    c.socket.write(Buffer.alloc(4));
    await expectClosedWith(c, 'ERR_FRAME_EMPTY');
  });

  test('ERR_UNKNOWN_MESSAGE_TYPE: a type byte nobody knows', async () => {
    const c = new RawClient(sc.socket);
    await c.ready;
    c.hello('unknown');
    c.socket.write(encodeFrame(200, Buffer.from('x')));
    await expectClosedWith(c, 'ERR_UNKNOWN_MESSAGE_TYPE');
  });

  test('ERR_MALFORMED_MESSAGE: an event whose body is not JSON', async () => {
    const c = new RawClient(sc.socket);
    await c.ready;
    c.hello('malformed');
    c.socket.write(encodeFrame(MessageType.Event, Buffer.from('{nope')));
    await expectClosedWith(c, 'ERR_MALFORMED_MESSAGE');
  });

  test('ERR_UNEXPECTED_MESSAGE: data before hello', async () => {
    const c = new RawClient(sc.socket);
    await c.ready;
    c.socket.write(encodeEvent({ ts: 1, type: 't', message: 'm' }));
    await expectClosedWith(c, 'ERR_UNEXPECTED_MESSAGE');
  });

  test('ERR_PROTOCOL_VERSION: a hello from a future shim', async () => {
    const c = new RawClient(sc.socket);
    await c.ready;
    c.socket.write(encodeFrame(MessageType.Hello, Buffer.from(JSON.stringify({ v: 99, app: 'x', pid: 1, shimVersion: '9', instanceId: 'f' }))));
    await expectClosedWith(c, 'ERR_PROTOCOL_VERSION');
  });

  test('every error is counted by code, and a well-behaved shim is served throughout', async () => {
    const good = connect({ app: 'good', socket: sc.socket, flushMs: 50 });
    good.counter('good.n').add(1);
    assert.equal(await good.flush(), true);
    const errs = await ipcErrors(sc.socket);
    for (const code of [
      'ERR_FRAME_TOO_LARGE',
      'ERR_FRAME_EMPTY',
      'ERR_UNKNOWN_MESSAGE_TYPE',
      'ERR_MALFORMED_MESSAGE',
      'ERR_UNEXPECTED_MESSAGE',
      'ERR_PROTOCOL_VERSION',
    ]) {
      assert.equal(errs[code], 1, `${code} counted once`);
    }
    await good.close();
    assert.equal(sc.alive, true);
  });
});
