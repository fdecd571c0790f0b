// The fault proxy's toxics do what they say, on real sockets between a test client and a test
// server (test/helpers/fault-proxy.ts), so a fault case that passes is not passing because its
// toxic did nothing.
import assert from 'node:assert/strict';
import { type AddressInfo, type Server, type Socket, connect, createServer } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, test } from 'node:test';
import { encodeFrame } from '@apm-sidecar/proto';
import { UpstreamType } from '@apm-sidecar/proto/upstream';
import { runCleanups } from '../helpers/cleanups';
import { FaultProxy } from '../helpers/fault-proxy';
import { tempDir, waitFor } from '../helpers/procs';
import { formatToxic, parseToxic } from '../helpers/toxics';

const cleanups: (() => unknown)[] = [];
afterEach(() => runCleanups(cleanups));

/** A server that records what each connection sent, and whether it saw a FIN or a reset. */
class Sink {
  readonly conns: { data: Buffer[]; ended: boolean; reset: boolean; sock: Socket }[] = [];
  readonly server: Server;
  constructor() {
    this.server = createServer({ allowHalfOpen: true }, (sock) => {
      const c = { data: [] as Buffer[], ended: false, reset: false, sock };
      this.conns.push(c);
      sock.on('data', (d: Buffer) => c.data.push(d));
      sock.on('end', () => {
        c.ended = true;
      });
      sock.on('error', (e: NodeJS.ErrnoException) => {
        if (e.code === 'ECONNRESET') c.reset = true;
      });
    });
    cleanups.push(() => {
      for (const c of this.conns) c.sock.destroy();
      this.server.close();
    });
  }
  async listen(): Promise<number> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    return (this.server.address() as AddressInfo).port;
  }
  bytes(i = 0): Buffer {
    return Buffer.concat(this.conns[i]?.data ?? []);
  }
}

async function rig(): Promise<{ sink: Sink; proxy: FaultProxy; client: () => Promise<Socket> }> {
  const sink = new Sink();
  const port = await sink.listen();
  const proxy = new FaultProxy({ listen: { host: '127.0.0.1', port: 0 }, target: { host: '127.0.0.1', port } });
  await proxy.start();
  cleanups.push(() => proxy.close());
  const client = async (): Promise<Socket> => {
    const s = connect({ host: '127.0.0.1', port: proxy.port, allowHalfOpen: true });
    s.on('error', () => {});
    cleanups.push(() => s.destroy());
    await new Promise((r) => s.once('connect', r));
    return s;
  };
  return { sink, proxy, client };
}

/** A sealed-looking upstream frame with counter `n` (the proxy reads the counter, nothing more). */
function sealed(n: number): Buffer {
  const payload = Buffer.alloc(8 + 20, n);
  payload.writeUInt32BE(0, 0);
  payload.writeUInt32BE(n, 4);
  return encodeFrame(UpstreamType.Numeric, payload);
}

describe('fault proxy toxics', () => {
  test('toxics parse from and print to their text form', () => {
    assert.deepEqual(parseToxic('latency=80,jitter=40'), { name: 'latency', opts: { ms: 80, jitter: 40 } });
    assert.deepEqual(parseToxic('half-open=down'), { name: 'half-open', opts: {}, dir: 'down' });
    assert.deepEqual(parseToxic('stall,dir=up'), { name: 'stall', opts: {}, dir: 'up' });
    assert.equal(formatToxic(parseToxic('frame-drop=5')), 'frame-drop=5,dir=up');
    assert.throws(() => parseToxic('latency=-1'), /integer/);
    assert.throws(() => parseToxic('frame-drop=1'), /integer ≥ 2/);
    assert.throws(() => parseToxic('teleport=1'), /unknown toxic/);
    assert.throws(() => parseToxic('stall,dir=sideways'), /dir must be/);
  });

  test('latency delays every byte by at least its ms, in order', async () => {
    const { sink, proxy, client } = await rig();
    proxy.set('latency', { ms: 150, jitter: 50 });
    const c = await client();
    const t0 = Date.now();
    for (let i = 0; i < 20; i++) c.write(Buffer.of(i));
    await waitFor('20 bytes through', () => sink.bytes().length === 20);
    assert.ok(Date.now() - t0 >= 100, `arrived after ${Date.now() - t0} ms`);
    assert.deepEqual(
      [...sink.bytes()],
      Array.from({ length: 20 }, (_, i) => i),
      'in order',
    );
  });

  test('bandwidth holds the rate', async () => {
    const { sink, proxy, client } = await rig();
    proxy.set('bandwidth', { bytesPerSec: 4000 }, 'up');
    const c = await client();
    const t0 = Date.now();
    c.write(Buffer.alloc(2000, 1));
    await waitFor('2000 bytes through', () => sink.bytes().length === 2000);
    // 2000 bytes at 4000 B/s: half a second, less the first slice (1/20 s).
    assert.ok(Date.now() - t0 >= 400, `2000 bytes in ${Date.now() - t0} ms`);
  });

  test('stall forwards nothing until cleared, then everything', async () => {
    const { sink, proxy, client } = await rig();
    const c = await client();
    await waitFor('the target connection', () => sink.conns.length === 1);
    proxy.set('stall', {});
    c.write('held');
    const before = proxy.stats.bytes.up;
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(proxy.stats.bytes.up, before, 'nothing forwarded while stalled');
    proxy.clear('stall');
    await waitFor('the bytes after the stall', () => sink.bytes().toString() === 'held');
  });

  test('close-after delivers exactly N bytes, then closes both sides', async () => {
    const { sink, proxy, client } = await rig();
    proxy.set('close-after', { bytes: 10 });
    const c = await client();
    let clientEnded = false;
    c.on('end', () => {
      clientEnded = true;
    });
    c.write(Buffer.alloc(25, 7));
    await waitFor('the target to see the FIN', () => sink.conns[0]?.ended === true);
    assert.equal(sink.bytes().length, 10);
    await waitFor('the client to see the FIN', () => clientEnded);
    assert.equal(proxy.stats.closedAfterBytes, 1);
  });

  test('reset sends RST to both peers', async () => {
    const { sink, proxy, client } = await rig();
    const c = await client();
    let code = '';
    c.on('error', (e: NodeJS.ErrnoException) => {
      code = e.code ?? '';
    });
    await waitFor('the target connection', () => sink.conns.length === 1);
    proxy.set('reset', { afterMs: 0 });
    await waitFor('the client to see ECONNRESET', () => code === 'ECONNRESET');
    await waitFor('the target to see ECONNRESET', () => sink.conns[0]?.reset === true);
  });

  test('half-open swallows one direction, bytes and FIN, while the other flows', async () => {
    const { sink, proxy, client } = await rig();
    proxy.set('half-open', {}, 'up');
    const c = await client();
    const got: Buffer[] = [];
    c.on('data', (d: Buffer) => got.push(d));
    await waitFor('the target connection', () => sink.conns.length === 1);
    c.write('lost');
    (sink.conns[0] as { sock: Socket }).sock.write('flows');
    await waitFor('downstream bytes', () => Buffer.concat(got).toString() === 'flows');
    c.end();
    await waitFor('the swallowed bytes counted', () => proxy.stats.discarded.up === 4);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(sink.bytes().length, 0, 'nothing went up');
    assert.equal(sink.conns[0]?.ended, false, 'the FIN went nowhere either');
  });

  test('slow-close passes the FIN on late', async () => {
    const { sink, proxy, client } = await rig();
    proxy.set('slow-close', { ms: 300 });
    const c = await client();
    await waitFor('the target connection', () => sink.conns.length === 1);
    const t0 = Date.now();
    c.end();
    await waitFor('the FIN at the target', () => sink.conns[0]?.ended === true);
    assert.ok(Date.now() - t0 >= 250, `FIN after ${Date.now() - t0} ms`);
  });

  test('frame toxics drop, duplicate and reorder the sealed frame whose counter is a multiple of EVERY', async () => {
    for (const [name, expected] of [
      ['frame-drop', [1, 2, 4, 5]],
      ['frame-duplicate', [1, 2, 3, 3, 4, 5]],
      ['frame-reorder', [1, 2, 4, 3, 5]],
    ] as const) {
      const { sink, proxy, client } = await rig();
      proxy.set(name, { every: 3 });
      const c = await client();
      // Split at odd offsets: the proxy cuts on frame boundaries whatever the chunks.
      const bytes = Buffer.concat([1, 2, 3, 4, 5].map(sealed));
      for (let i = 0; i < bytes.length; i += 7) c.write(bytes.subarray(i, i + 7));
      const frameLen = sealed(1).length;
      await waitFor(`${name}: frames through`, () => sink.bytes().length === expected.length * frameLen);
      const got = sink.bytes();
      const counters = Array.from({ length: expected.length }, (_, i) => got.readUInt32BE(i * frameLen + 9));
      assert.deepEqual(counters, [...expected], name);
    }
  });

  test('on a Unix socket too', async () => {
    const tmp = tempDir('apm-fproxy-');
    cleanups.push(() => tmp.cleanup());
    const target = join(tmp.dir, 'target.sock');
    const got: Buffer[] = [];
    const server = createServer((s) => s.on('data', (d: Buffer) => got.push(d)));
    await new Promise<void>((r) => server.listen(target, r));
    cleanups.push(() => server.close());
    const proxy = new FaultProxy({ listen: { path: join(tmp.dir, 'proxy.sock') }, target: { path: target } });
    await proxy.start();
    cleanups.push(() => proxy.close());
    proxy.set('latency', { ms: 50 });
    const c = connect({ path: join(tmp.dir, 'proxy.sock') });
    cleanups.push(() => c.destroy());
    c.write('over unix');
    await waitFor('bytes through the Unix socket proxy', () => Buffer.concat(got).toString() === 'over unix');
  });
});
