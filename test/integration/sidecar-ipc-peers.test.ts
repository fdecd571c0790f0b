import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { MessageType, decodeWelcome, encodeStatusRequest } from '@apm-sidecar/proto';
import { type ApmClient, connect } from '@apm-sidecar/shim';
import { HostilePeer, metricsFrame, rssMiB } from '../helpers/ipc-peer';
import { type Proc, type SidecarProc, pointsOf, runCli, sleep, startSidecar, statusJson, tempDir, waitFor } from '../helpers/procs';

const FAST = ['--set', 'flush_ms=50', '--set', 'metric_interval_ms=200'];

function sumOf(p: Proc, name: string): number {
  return pointsOf(p, name).reduce((a, pt) => a + (pt.sum as number), 0);
}

/** Adds `n` ones to the counter in `rounds` flushes; every flush must be acked. */
async function record(apm: ApmClient, name: string, rounds: number, n: number): Promise<void> {
  const c = apm.counter(name);
  for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < n; i++) c.add(1);
    assert.equal(await apm.flush(), true, `flush ${r} acked`);
  }
}

/** Wait until the peer is closed, or `ms` passed; true when it was closed. */
async function closedWithin(peer: HostilePeer, ms: number): Promise<boolean> {
  return Promise.race([peer.closedAt.then(() => true), sleep(ms).then(() => false)]);
}

describe('IPC peers cannot act for another shim (real sidecar, real shim, hostile raw client)', () => {
  const tmp = tempDir();
  after(() => tmp.cleanup());

  test('a Hello with a live shim’s instance id and another secret is refused (ERR_INSTANCE_SECRET) and the shim’s totals stay exact', async () => {
    const sc = await startSidecar(`${tmp.dir}/live`, FAST);
    const apm = connect({ app: 'victim', socket: sc.socket, flushMs: 50 });
    try {
      await record(apm, 'victim.n', 2, 50);
      const attacker = new HostilePeer(sc.socket);
      await attacker.ready;
      // The strongest attacker: it knows the full instance id, and claims a seq far ahead.
      attacker.hello({ instanceId: apm.instanceId, seq: 2 ** 47 });
      attacker.socket.write(metricsFrame(2 ** 47, 'victim.n', 1_000_000));
      assert.equal(await closedWithin(attacker, 3000), true, 'the impersonator is disconnected');
      assert.deepEqual(
        attacker.errors().map((e) => e.code),
        ['ERR_INSTANCE_SECRET'],
      );
      assert.equal(attacker.of(MessageType.Welcome).length, 0, 'no welcome (it would leak the acked seq)');
      assert.equal(attacker.acks().length, 0, 'nothing acked to the impersonator');

      await record(apm, 'victim.n', 3, 100);
      await waitFor('every value of the shim to be emitted', () => sumOf(sc, 'victim.n') === 400, 10000);
      await sleep(400);
      assert.equal(sumOf(sc, 'victim.n'), 400, 'the shim’s totals are exact: nothing lost, nothing of the impersonator');
      assert.equal(apm.stats().dropped.buffer_full ?? 0, 0);
      const st = await statusJson(sc.socket);
      assert.equal(st.counters.ipcErrors.ERR_INSTANCE_SECRET, 1, 'the refusal is counted');
      assert.equal(st.shims.filter((s: any) => s.app === 'victim').length, 1, 'the shim is still connected');
    } finally {
      await apm.close();
      await sc.kill('SIGTERM');
    }
  });

  test('the instance stays bound to its secret across a sidecar restart (the binding is kept in the retention)', async () => {
    const dir = `${tmp.dir}/restart`;
    let sc: SidecarProc = await startSidecar(dir, FAST);
    const apm = connect({ app: 'victim2', socket: sc.socket, flushMs: 50, reconnectMinMs: 1500, reconnectMaxMs: 1500 });
    try {
      await record(apm, 'victim2.n', 2, 10);
      await sc.kill('SIGTERM');
      sc = await startSidecar(dir, FAST);
      // The attacker gets in before the shim reconnects.
      const attacker = new HostilePeer(sc.socket);
      await attacker.ready;
      attacker.hello({ instanceId: apm.instanceId, seq: 2 ** 47 });
      attacker.socket.write(metricsFrame(2 ** 47, 'victim2.n', 1_000_000));
      assert.equal(await closedWithin(attacker, 3000), true, 'the impersonator is disconnected');
      assert.deepEqual(
        attacker.errors().map((e) => e.code),
        ['ERR_INSTANCE_SECRET'],
      );
      await waitFor('the shim to reconnect', () => apm.state === 'active', 10000);
      await record(apm, 'victim2.n', 2, 10);
      await waitFor('the values after the restart', () => sumOf(sc, 'victim2.n') === 20, 10000);
      await sleep(400);
      assert.equal(sumOf(sc, 'victim2.n'), 20, 'after the restart every value counts once; none of the impersonator’s');
    } finally {
      await apm.close();
      await sc.kill('SIGTERM');
    }
  });

  test('a seq far beyond what the shim could have sent is refused (ERR_SEQ_JUMP), not committed, and counted', async () => {
    const sc = await startSidecar(`${tmp.dir}/jump`, FAST);
    try {
      const secret = 'a'.repeat(64);
      const p = new HostilePeer(sc.socket);
      await p.ready;
      p.hello({ instanceId: 'jumper', secret, seq: 0 });
      p.socket.write(metricsFrame(1, 'jump.n', 1));
      await waitFor('seq 1 to be acked', () => p.acks().includes(1));
      p.socket.write(metricsFrame(2 ** 47, 'jump.n', 1000));
      assert.equal(await closedWithin(p, 3000), true, 'the connection is closed');
      assert.deepEqual(p.acks(), [1]);
      assert.deepEqual(
        p.errors().map((e) => e.code),
        ['ERR_SEQ_JUMP'],
      );
      // The same instance (same secret) comes back: the poisoned seq was not recorded.
      const again = new HostilePeer(sc.socket);
      await again.ready;
      again.hello({ instanceId: 'jumper', secret, seq: 1 });
      await waitFor('welcome', () => again.of(MessageType.Welcome).length === 1);
      assert.equal(decodeWelcome((again.of(MessageType.Welcome)[0] as { payload: Buffer }).payload).ackedSeq, 1);
      again.socket.write(metricsFrame(2, 'jump.n', 2));
      await waitFor('the next seq to be acked', () => again.acks().includes(2));
      again.socket.destroy();
      await waitFor('the points', () => sumOf(sc, 'jump.n') === 3);
      const st = await statusJson(sc.socket);
      assert.equal(st.counters.ipcErrors.ERR_SEQ_JUMP, 1);
      assert.equal(st.counters.received.metrics, 2, 'the refused frame was not accepted');
    } finally {
      await sc.kill('SIGTERM');
    }
  });

  test('the same instance and secret on a new connection replaces the old one; the DogStatsD instance cannot be claimed', async () => {
    const sc = await startSidecar(`${tmp.dir}/again`, FAST);
    try {
      const secret = 'b'.repeat(64);
      const first = new HostilePeer(sc.socket);
      await first.ready;
      first.hello({ instanceId: 'twice', secret });
      await waitFor('welcome', () => first.of(MessageType.Welcome).length === 1);
      const second = new HostilePeer(sc.socket);
      await second.ready;
      second.hello({ instanceId: 'twice', secret });
      await waitFor('welcome', () => second.of(MessageType.Welcome).length === 1);
      assert.equal(await closedWithin(first, 3000), true, 'the previous connection of the instance is closed');
      assert.equal(second.closed, false);
      const st = await statusJson(sc.socket);
      assert.equal(st.shims.length, 1, 'one live session per instance');

      const ds = new HostilePeer(sc.socket);
      await ds.ready;
      ds.hello({ instanceId: 'dogstatsd' });
      assert.equal(await closedWithin(ds, 3000), true);
      assert.deepEqual(
        ds.errors().map((e) => e.code),
        ['ERR_INSTANCE_SECRET'],
      );
      second.socket.destroy();
    } finally {
      await sc.kill('SIGTERM');
    }
  });

  test('a peer that sends status requests and never reads the replies is disconnected (ERR_PEER_NOT_READING) and the sidecar’s memory stays bounded', async (t) => {
    const sc = await startSidecar(`${tmp.dir}/spam`, FAST);
    try {
      await sleep(500);
      const baseline = rssMiB(sc.pid);
      const spammer = new HostilePeer(sc.socket);
      await spammer.ready;
      spammer.socket.pause();
      const batch = Buffer.concat(Array.from({ length: 2000 }, () => encodeStatusRequest()));
      let peak = baseline;
      const sampler = setInterval(() => {
        peak = Math.max(peak, rssMiB(sc.pid));
      }, 25);
      const deadline = Date.now() + 10000;
      let sent = 0;
      while (!spammer.closed && Date.now() < deadline) {
        sent += 2000;
        if (!spammer.socket.write(batch)) await Promise.race([new Promise((r) => spammer.socket.once('drain', r)), spammer.closedAt, sleep(200)]);
        else await new Promise((r) => setImmediate(r));
      }
      clearInterval(sampler);
      peak = Math.max(peak, rssMiB(sc.pid));
      t.diagnostic(`sidecar RSS: ${baseline.toFixed(1)} MiB before the attack, peak ${peak.toFixed(1)} MiB during it; ${sent} status requests written`);
      assert.equal(spammer.closed, true, 'the non-reading peer is disconnected');
      assert.ok(peak - baseline < 64, `RSS grew by ${(peak - baseline).toFixed(1)} MiB`);
      const st = await statusJson(sc.socket);
      assert.equal(st.counters.ipcErrors.ERR_PEER_NOT_READING, 1, 'counted');
      assert.equal(sc.alive, true);
    } finally {
      await sc.kill('SIGTERM');
    }
  });

  test('a peer that sends no Hello within ipc_hello_timeout_ms is disconnected (ERR_HELLO_TIMEOUT); a shim is not', async () => {
    const sc = await startSidecar(`${tmp.dir}/hello`, [...FAST, '--set', 'ipc_hello_timeout_ms=300', '--http', '127.0.0.1:0']);
    const apm = connect({ app: 'patient', socket: sc.socket, flushMs: 50 });
    try {
      const idle = new HostilePeer(sc.socket);
      await idle.ready;
      const t0 = Date.now();
      assert.equal(await closedWithin(idle, 5000), true, 'the silent peer is disconnected');
      const took = (await idle.closedAt) - t0;
      assert.ok(took >= 250, `not before the deadline (${took} ms)`);
      assert.deepEqual(
        idle.errors().map((e) => e.code),
        ['ERR_HELLO_TIMEOUT'],
      );
      await record(apm, 'patient.n', 1, 1);
      await sleep(600);
      assert.equal(apm.state, 'active', 'a shim that said Hello stays connected past the deadline');
      const st = await statusJson(sc.socket);
      assert.equal(st.counters.ipcErrors.ERR_HELLO_TIMEOUT, 1);
      const http = (await sc.waitLine('http', (l) => l.msg === 'serving /healthz, /readyz and /metrics')).http as { port: number };
      const metrics = await (await fetch(`http://127.0.0.1:${http.port}/metrics`)).text();
      assert.match(metrics, /^apm_sidecar_ipc_errors_total\{code="ERR_HELLO_TIMEOUT"\} 1$/m, 'and in /metrics');
    } finally {
      await apm.close();
      await sc.kill('SIGTERM');
    }
  });

  test('status output does not hand out what would identify a shim’s instance in full', async () => {
    const sc = await startSidecar(`${tmp.dir}/status`, FAST);
    const apm = connect({ app: 'listed', socket: sc.socket, flushMs: 50 });
    try {
      await record(apm, 'listed.n', 1, 1);
      const r = await runCli(['status', '--json', '--socket', sc.socket]);
      const st = JSON.parse(r.stdout);
      const shim = st.shims.find((s: any) => s.app === 'listed');
      assert.ok(shim !== undefined, 'the shim is listed');
      assert.equal(r.stdout.includes(apm.instanceId), false, 'the full instance id is not in the status');
      assert.equal(apm.instanceId.startsWith(shim.instance), true, 'a short prefix identifies it for people');
      assert.ok(shim.instance.length <= 8);
    } finally {
      await apm.close();
      await sc.kill('SIGTERM');
    }
  });
});
