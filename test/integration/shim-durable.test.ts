import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, afterEach, describe, it } from 'node:test';
import type { BtRegistration, Hello } from '@apm-sidecar/proto';
import { type ApmClient, connect } from '@apm-sidecar/shim';
import { type SidecarProc, runCli, startSidecar, tempDir, totalCount, waitFor } from '../helpers/procs';
import { AckRelay, FakeSidecar, type FakeFrame } from '../helpers/shim-fakes';

const tmp = tempDir('apm-shim-durable-');
after(() => tmp.cleanup());

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

let n = 0;
function sockPath(name: string): string {
  return join(tmp.dir, `${name}${++n}.sock`);
}

/** A client that flushes only when asked, so every frame in a test is one we made. */
function client(socket: string): ApmClient {
  const apm = connect({ socket, app: 'durable-test', flushMs: 3_600_000, reconnectMinMs: 10, reconnectMaxMs: 100 });
  cleanups.push(() => apm.close());
  return apm;
}

/** Make one durable metrics frame now (flush() sends it; its promise is not awaited: acks may be withheld). */
function metricsFrame(apm: ApmClient, name: string, value: number): void {
  apm.counter(name).add(value);
  void apm.flush(1);
}

function durable(f: FakeSidecar, conn: number): FakeFrame[] {
  return f.frames.filter((x) => x.conn === conn && x.seq !== undefined);
}

describe('durable frames with a fake sidecar', () => {
  it('resends unacknowledged metrics and registrations after a reconnect, same seqs and bytes; best-effort frames are not resent', async () => {
    const f = await FakeSidecar.start(sockPath('fake'), (x) => {
      x.ack = false;
    });
    cleanups.push(() => f.close());
    const apm = client(f.path);
    await waitFor('the welcome', () => apm.state === 'active');
    metricsFrame(apm, 'durable.a', 1);
    metricsFrame(apm, 'durable.b', 2);
    metricsFrame(apm, 'durable.c', 3);
    apm.registerBusinessTransaction('POST /durable');
    apm.event({ type: 'e', message: 'best effort' });
    apm.startTransaction('GET /best-effort').end();
    const first = f.shims[0]?.id as number;
    await waitFor(
      'four durable frames and two best-effort ones',
      () => durable(f, first).length === 4 && f.of('Event', first).length === 1 && f.of('Trace', first).length === 1,
    );
    assert.deepEqual(
      durable(f, first).map((x) => x.seq),
      [1, 2, 3, 4],
    );
    assert.equal(apm.stats().acked, 0);
    assert.equal(apm.stats().buffered, 4, 'unacked durable frames are kept; sent best-effort ones are not');

    f.cut();
    await waitFor('the shim to reconnect and resend', () => f.shims.length === 2 && durable(f, f.shims[1]?.id as number).length === 4);
    const second = f.shims[1]?.id as number;
    const hellos = f.shims.map((c) => c.hello as Hello);
    assert.equal(hellos[1]?.instanceId, hellos[0]?.instanceId, 'the same instance id, so the sidecar can de-duplicate');
    const again = durable(f, second);
    assert.deepEqual(
      again.map((x) => x.seq),
      [1, 2, 3, 4],
    );
    for (const [i, orig] of durable(f, first).entries())
      assert.ok(orig.payload.equals((again[i] as FakeFrame).payload), `frame seq ${orig.seq} resent byte for byte`);
    assert.equal(((again[3] as FakeFrame).msg.body as BtRegistration).name, 'POST /durable');
    // A marker after the resend: the best-effort frames of the first connection did not come again.
    apm.event({ type: 'e', message: 'marker' });
    await waitFor('the marker event', () => f.of('Event', second).length === 1);
    assert.equal(((f.of('Event', second)[0] as FakeFrame).msg.body as { message: string }).message, 'marker');
    assert.equal(f.of('Trace', second).length, 0);
  });

  it('welcome.ackedSeq releases what the sidecar already committed: only later seqs are resent', async () => {
    const f = await FakeSidecar.start(sockPath('fake'), (x) => {
      x.ack = false;
    });
    cleanups.push(() => f.close());
    const apm = client(f.path);
    await waitFor('the welcome', () => apm.state === 'active');
    for (let i = 1; i <= 4; i++) metricsFrame(apm, `seq.${i}`, i);
    await waitFor('four frames', () => durable(f, f.shims[0]?.id as number).length === 4);

    f.welcomeAckedSeq = 2;
    f.cut();
    await waitFor('the resend', () => f.shims.length === 2 && durable(f, f.shims[1]?.id as number).length === 2);
    assert.deepEqual(
      durable(f, f.shims[1]?.id as number).map((x) => x.seq),
      [3, 4],
    );
    assert.equal(apm.stats().acked, 2);
    assert.equal(apm.stats().buffered, 2);

    // One cumulative ack (for a new frame, seq 5) releases 3, 4 and 5.
    f.ack = true;
    f.welcomeAckedSeq = null;
    apm.counter('seq.5').add(5);
    assert.equal(await apm.flush(), true);
    assert.equal(apm.stats().acked, 5);
    assert.equal(apm.stats().buffered, 0);

    // Nothing acked is ever sent again: the first durable frame on the next connection is a new one.
    f.cut();
    await waitFor('the third connection', () => f.shims.length === 3 && apm.state === 'active');
    apm.counter('seq.6').add(6);
    assert.equal(await apm.flush(), true);
    assert.deepEqual(
      durable(f, f.shims[2]?.id as number).map((x) => x.seq),
      [6],
    );
  });
});

describe('exactly once through a real sidecar when acks are lost', () => {
  const SPEED = ['--set', 'flush_ms=50', '--set', 'metric_interval_ms=200'];

  async function setup(): Promise<{ sidecar: SidecarProc; relay: AckRelay; apm: ApmClient }> {
    const dir = tempDir('apm-shim-relay-');
    cleanups.push(() => dir.cleanup());
    const sidecar = await startSidecar(dir.dir, SPEED);
    cleanups.push(() => sidecar.kill('SIGTERM'));
    const relay = await AckRelay.start(join(dir.dir, 'relay.sock'), sidecar.socket);
    cleanups.push(() => relay.close());
    const apm = client(relay.path);
    await waitFor('the welcome through the relay', () => apm.state === 'active');
    return { sidecar, relay, apm };
  }

  /** 5 metrics frames of 100 each and one registration, all committed by the sidecar but none acked to the shim. */
  async function sendWithAcksSwallowed(relay: AckRelay, apm: ApmClient, name: string): Promise<void> {
    relay.swallowAcks = true;
    for (let round = 0; round < 5; round++) {
      for (let i = 0; i < 100; i++) apm.counter(name).add(1);
      void apm.flush(1);
    }
    apm.registerBusinessTransaction(`POST /${name}`);
    await waitFor('six acks swallowed', () => relay.acksSwallowed === 6);
    assert.deepEqual(relay.durableSeqs, [1, 2, 3, 4, 5, 6]);
    assert.equal(apm.stats().acked, 0);
    assert.equal(apm.stats().buffered, 6);
  }

  async function assertExactlyOnce(sidecar: SidecarProc, apm: ApmClient, name: string): Promise<void> {
    await waitFor('the shim to hold nothing unacked', () => apm.stats().buffered === 0);
    const marker = `${name}.marker`;
    apm.counter(marker).add(1);
    assert.equal(await apm.flush(), true);
    await waitFor('the marker', () => totalCount(sidecar, marker) === 1);
    assert.equal(totalCount(sidecar, name), 500, 'every sample counted exactly once');
    assert.equal(sidecar.packs('btRegistration').filter((p) => p.name === `POST /${name}`).length, 1);
  }

  it('the welcome after a reconnect carries the committed seq: nothing is resent and every sample counts once', async () => {
    const { sidecar, relay, apm } = await setup();
    await sendWithAcksSwallowed(relay, apm, 'relay.welcome');
    relay.swallowAcks = false;
    relay.cut();
    await assertExactlyOnce(sidecar, apm, 'relay.welcome');
    assert.deepEqual(relay.durableSeqs, [1, 2, 3, 4, 5, 6, 7], 'only the marker frame was sent after the reconnect');
  });

  it('when the shim resends everything, the sidecar de-duplicates by (instance id, seq) and every sample counts once', async () => {
    const { sidecar, relay, apm } = await setup();
    await sendWithAcksSwallowed(relay, apm, 'relay.dedup');
    relay.swallowAcks = false;
    relay.forgetWelcome = true; // the shim is told nothing was committed and resends all six
    relay.cut();
    await assertExactlyOnce(sidecar, apm, 'relay.dedup');
    assert.deepEqual(relay.durableSeqs, [1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6, 7]);
    const status = await runCli(['status', '--json', '--socket', sidecar.socket]);
    assert.equal(status.code, 0, status.stderr);
    assert.equal((JSON.parse(status.stdout) as { counters: { duplicates: number } }).counters.duplicates, 6);
  });
});
