import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, afterEach, describe, it } from 'node:test';
import type { EventPack, MetricsMessage } from '@apm-sidecar/proto';
import { type ApmClient, type ConnectOptions, connect } from '@apm-sidecar/shim';
import { type SidecarProc, pointsOf, startSidecar, tempDir, totalCount, waitFor } from '../helpers/procs';
import { FakeSidecar } from '../helpers/shim-fakes';

const SPEED = ['--set', 'flush_ms=50', '--set', 'metric_interval_ms=200'];

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
const tmp = tempDir('apm-shim-reconnect-');
after(() => tmp.cleanup());
let n = 0;

function client(socket: string, opts: ConnectOptions = {}): ApmClient {
  const apm = connect({ socket, app: 'reconnect-test', reconnectMinMs: 20, reconnectMaxMs: 200, ...opts });
  cleanups.push(() => apm.close());
  return apm;
}

function freshDir(): string {
  const d = tempDir('apm-shim-rc-');
  cleanups.push(() => d.cleanup());
  return d.dir;
}

async function startTracked(dir: string): Promise<SidecarProc> {
  const s = await startSidecar(dir, SPEED);
  cleanups.push(() => s.kill('SIGKILL'));
  return s;
}

function sumOf(p: SidecarProc, name: string): number {
  return pointsOf(p, name).reduce((a, pt) => a + (pt.sum as number), 0);
}

/** A marker counter flushed last; once printed, everything committed before it is printed too. */
async function settle(apm: ApmClient, sidecar: SidecarProc, marker: string): Promise<void> {
  apm.counter(marker).add(1);
  assert.equal(await apm.flush(), true);
  await waitFor(`marker ${marker}`, () => totalCount(sidecar, marker) === 1);
}

describe('shim reconnects to its sidecar', () => {
  it('a shim started before its sidecar keeps retrying, connects once the sidecar listens, and delivers what it recorded meanwhile', async () => {
    const dir = freshDir();
    const apm = client(join(dir, 'apm.sock'));
    await waitFor('the first attempt to fail', () => apm.state === 'disconnected');
    for (let i = 0; i < 50; i++) apm.counter('early.count').add(1);
    void apm.flush(1);
    apm.registerBusinessTransaction('GET /early');
    apm.event({ type: 'early', message: 'recorded while the sidecar was away' });
    assert.ok(apm.stats().buffered >= 3);

    const sidecar = await startTracked(dir);
    await waitFor('the shim to connect', () => apm.state === 'active');
    await settle(apm, sidecar, 'early.marker');
    assert.equal(totalCount(sidecar, 'early.count'), 50);
    assert.equal(sidecar.packs('btRegistration').filter((p) => p.name === 'GET /early').length, 1);
    assert.equal(sidecar.packs('event').filter((p) => (p.event as EventPack).type === 'early').length, 1);
    assert.equal(sidecar.logs('shim connected').length, 1);
    assert.equal(apm.stats().buffered, 0);
  });

  it('reconnects after the sidecar restarts and delivers what was recorded while it was down', async () => {
    const dir = freshDir();
    const first = await startTracked(dir);
    const apm = client(first.socket);
    await waitFor('the shim to connect', () => apm.state === 'active');
    apm.counter('restart.before').add(10);
    assert.equal(await apm.flush(), true);

    await first.kill('SIGTERM');
    assert.equal(sumOf(first, 'restart.before'), 10, 'the first sidecar printed what it had on SIGTERM');
    await waitFor('the shim to see the sidecar gone', () => apm.state === 'disconnected');
    apm.counter('restart.gap').add(20);
    apm.counter('restart.gap').add(22);
    void apm.flush(1);

    const second = await startTracked(dir);
    await waitFor('the shim to reconnect', () => apm.state === 'active');
    await settle(apm, second, 'restart.marker');
    assert.equal(totalCount(second, 'restart.gap'), 2);
    assert.equal(sumOf(second, 'restart.gap'), 42);
    assert.equal(totalCount(second, 'restart.before'), 0, 'what the first sidecar acked is not sent again');
  });

  it('keeps retrying a sidecar that drops every connection, and recovers once it welcomes again', async () => {
    const f = await FakeSidecar.start(join(tmp.dir, `drop${++n}.sock`));
    cleanups.push(() => f.close());
    const apm = client(f.path, { reconnectMinMs: 5, reconnectMaxMs: 50 });
    await waitFor('the welcome', () => apm.state === 'active');
    for (let i = 0; i < 3; i++) {
      const before = f.shims.length;
      f.cut();
      await waitFor(`reconnect ${i + 1}`, () => f.shims.length === before + 1 && apm.state === 'active');
    }
    apm.counter('after.drops').add(1);
    assert.equal(await apm.flush(), true);
  });
});

describe('shim buffer while the sidecar is away, then delivered', () => {
  it('keeps at most bufferBytes, dropping the oldest best-effort frames before durable ones, and delivers the rest on connect', async () => {
    const path = join(tmp.dir, `late${++n}.sock`);
    const bound = 8 * 1024;
    const apm = client(path, { bufferBytes: bound, flushMs: 3_600_000, reconnectMinMs: 10, reconnectMaxMs: 50 });
    await waitFor('the first attempt to fail', () => apm.state === 'disconnected');
    for (let round = 1; round <= 5; round++) {
      apm.counter('kept', { round: String(round) }).add(round);
      void apm.flush(1);
    }
    for (let i = 0; i < 100; i++) {
      apm.event({ type: 'e', message: `event ${i} ${'.'.repeat(200)}` });
      assert.ok(apm.stats().bufferedBytes <= bound, `${apm.stats().bufferedBytes} bytes buffered`);
    }
    const s = apm.stats();
    assert.ok((s.dropped.buffer_full ?? 0) > 0);
    const kept = s.buffered - 5;

    const f = await FakeSidecar.start(path);
    cleanups.push(() => f.close());
    await waitFor('the buffered frames', () => f.of('Metrics').length === 5 && f.of('Event').length === kept);
    assert.deepEqual(
      f.of('Metrics').map((x) => x.seq),
      [1, 2, 3, 4, 5],
      'every durable frame survived',
    );
    const sums = f.of('Metrics').map((x) => (x.msg.body as MetricsMessage).points.map((p) => p.sum));
    assert.deepEqual(sums, [[1], [2], [3], [4], [5]]);
    const got = f.of('Event').map((x) => Number((x.msg.body as EventPack).message.split(' ')[1]));
    const expected = Array.from({ length: kept }, (_, i) => 100 - kept + i);
    assert.deepEqual(got, expected, 'the newest events were kept, in order');
    assert.equal(f.decodeErrors.length, 0);
  });
});
