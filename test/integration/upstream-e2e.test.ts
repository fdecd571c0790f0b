import assert from 'node:assert/strict';
import { connect as tcpConnect } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { FrameParser } from '@apm-sidecar/proto';
import { ClientHandshake, Direction, Inner, Opener, Sealer, UpstreamType, encodeAgentInfo, encodeTextBatch, parseAccessKey } from '@apm-sidecar/proto/upstream';
import { HttpTunnelSocket } from '@apm-sidecar/sidecar';
import { connect } from '@apm-sidecar/shim';
import nacl from 'tweetnacl';
import { type CollectorProc, Relay, createKey, getJson, startCollector } from '../helpers/collector';
import { type SidecarProc, runCli, sleep, startSidecar, statusJson, tempDir, waitFor } from '../helpers/procs';

const FAST = ['--set', 'flush_ms=50', '--set', 'metric_interval_ms=200', '--set', 'tcp_connection_timeout=1000'];

type Transport = 'tcp' | 'http';

function upstreamSidecar(transport: Transport, dir: string, hosts: string, port: number, key: string, extra: string[] = []): Promise<SidecarProc> {
  return startSidecar(dir, ['--transport', transport, '--server-host', hosts, '--server-port', String(port), ...FAST, ...extra], {
    APM_SIDECAR_ACCESS_KEY: key,
  });
}

/** The collector port a transport talks to: the agent port for tcp, the HTTP port for the tunnel. */
function portFor(transport: Transport, c: CollectorProc): number {
  return transport === 'tcp' ? c.port : c.httpPort;
}

async function metricSum(c: CollectorProc, name: string): Promise<{ count: number; sum: number; points: any[] }> {
  const r = await getJson<any[]>(c.httpPort, `/api/metrics?name=${encodeURIComponent(name)}`, c.httpHost);
  assert.equal(r.status, 200);
  return { count: r.body.reduce((a, p) => a + p.count, 0), sum: r.body.reduce((a, p) => a + p.sum, 0), points: r.body };
}

/** A hand-driven agent on the real protocol, for the attacks a sidecar never makes. */
/** Its carrier is a TCP socket, or the sidecar's HTTP tunnel carrier: the collector serves both with the same code. */
async function rawAgent(port: number, key: string, agentId: string, transport: Transport = 'tcp') {
  const sock =
    transport === 'tcp'
      ? tcpConnect({ host: '127.0.0.1', port })
      : new HttpTunnelSocket({ host: '127.0.0.1', port, pollMs: 50, requestTimeoutMs: 5000, maxResponseBytes: 1 << 24 });
  const frames: { type: number; payload: Buffer }[] = [];
  let opener: Opener | null = null;
  const inner: number[] = [];
  const hs = new ClientHandshake(nacl, parseAccessKey(key), agentId);
  let sealer: Sealer | null = null;
  const parser = new FrameParser(1 << 24, (type, payload) => {
    frames.push({ type, payload: Buffer.from(payload) });
    if (type === UpstreamType.ServerHello) {
      const { finished, keys } = hs.serverHello(payload);
      sealer = new Sealer(nacl, keys, Direction.AgentToCollector);
      opener = new Opener(nacl, keys, Direction.CollectorToAgent);
      sock.write(finished);
      sock.write(sealer.text(Inner.AgentInfo, encodeAgentInfo({ agentId, host: 'raw', version: 'test', apps: ['raw'] })));
    } else if (opener !== null) {
      inner.push(opener.open(type, payload).inner);
    }
  });
  let closed = false;
  sock.on('data', (d) => parser.push(d));
  sock.on('close', () => {
    closed = true;
  });
  sock.on('error', () => {});
  await new Promise((r) => sock.once('connect', r));
  sock.write(hs.hello());
  await waitFor('the raw agent to be licensed', () => inner.includes(Inner.License));
  return { sock, inner, sealer: () => sealer as unknown as Sealer, closed: () => closed };
}

for (const transport of ['tcp', 'http'] as const) {
  const tcpSidecar = (dir: string, _hosts: string, _port: number, key: string, extra: string[] = []) =>
    upstreamSidecar(transport, dir, _hosts, _port, key, extra);
  describe(`upstream over ${transport}: shim → sidecar → collector`, () => {
    const tmp = tempDir();
    let collector: CollectorProc;
    let cport: number;
    let key: string;
    before(async () => {
      const data = join(tmp.dir, 'collector');
      key = await createKey(data, 'shop');
      collector = await startCollector(data, ['--set', 'max_frame_bytes=65536']);
      cport = portFor(transport, collector);
    });
    after(async () => {
      await collector.kill('SIGTERM');
      tmp.cleanup();
    });

    test('exact counts and quantiles arrive in the collector’s store', async () => {
      const sc = await tcpSidecar(join(tmp.dir, 'e2e'), '127.0.0.1', cport, key, ['--set', 'agent_id=e2e-agent']);
      const apm = connect({ app: 'shop', socket: sc.socket, flushMs: 50 });
      try {
        await waitFor('the sidecar to be active', async () => (await statusJson(sc.socket)).state === 'active');
        const before = (await getJson(collector.httpPort, '/api/stats')).body;
        const lat = apm.histogram('e2e.lat', { route: '/pay' });
        for (let v = 1; v <= 1000; v++) lat.record(v);
        const orders = apm.counter('e2e.orders', { region: 'eu' });
        for (let i = 0; i < 500; i++) orders.add(1);
        for (let i = 0; i < 3; i++) apm.event({ type: 'deploy', message: `v${i}` });
        const tx = apm.startTransaction('POST /pay');
        tx.step('sql', 'SELECT 1', 1);
        tx.end();
        apm.registerBusinessTransaction('POST /pay');
        assert.equal(await apm.flush(), true);

        const lat1 = await waitFor('the histogram to be stored', async () => {
          const m = await metricSum(collector, 'e2e.lat');
          return m.count === 1000 ? m : null;
        });
        assert.equal(lat1.points.length, 1, 'recorded in one tick: one interval');
        const p = lat1.points[0];
        assert.deepEqual([p.count, p.sum, p.min, p.max], [1000, 500500, 1, 1000]);
        assert.deepEqual(p.tags, { route: '/pay', app: 'shop' }, 'the shim tags every series with its app');
        for (const [q, exact] of [
          ['p50', 500],
          ['p95', 950],
          ['p99', 990],
        ] as const) {
          assert.ok(Math.abs(p[q] - exact) / exact <= 0.01, `${q} ${p[q]} within 1% of ${exact}`);
        }
        await waitFor('the counter to be stored', async () => (await metricSum(collector, 'e2e.orders')).sum === 500);
        const st = await waitFor('text items to be stored', async () => {
          const s = (await getJson(collector.httpPort, '/api/stats')).body;
          return s.received.events - before.received.events === 3 &&
            s.received.traces - before.received.traces === 1 &&
            s.received.btRegistrations - before.received.btRegistrations === 1
            ? s
            : null;
        });
        assert.equal(st.rejected.badKey, before.rejected.badKey);
        const agents = (await getJson<any[]>(collector.httpPort, '/api/agents')).body;
        const me = agents.find((a) => a.agentId === 'e2e-agent');
        assert.equal(me?.state, 'live');
        assert.equal(me?.licensed, true);
        const s = await statusJson(sc.socket);
        assert.equal(s.upstream.connected, true);
        assert.ok(s.upstream.lastAckAt !== null);
      } finally {
        await apm.close();
        await sc.kill('SIGTERM');
      }
    });

    test('the bytes on the wire carry no metric name, tag or trace text in clear', async () => {
      const relay = new Relay(cport);
      await relay.listen();
      const sc = await tcpSidecar(join(tmp.dir, 'wire'), '127.0.0.1', relay.port, key, ['--set', 'agent_id=wire-agent']);
      const apm = connect({ app: 'wire', socket: sc.socket, flushMs: 50 });
      try {
        await waitFor('active', async () => (await statusJson(sc.socket)).state === 'active');
        apm.histogram('wire.secret.metric', { customer: 'acme-confidential' }).record(7);
        const tx = apm.startTransaction('GET /vault');
        tx.step('sql', 'SELECT credit_card FROM vault_records', 2);
        tx.end();
        apm.event({ type: 'audit', message: 'password-reset-for-alice' });
        assert.equal(await apm.flush(), true);
        await waitFor('stored', async () => (await metricSum(collector, 'wire.secret.metric')).count === 1);
        await waitFor('trace stored', async () => (await statusJson(sc.socket)).counters.sent.traces === 1);
        const wire = relay.bytes();
        assert.ok(wire.length > 500, 'the relay saw the session');
        for (const needle of [
          'wire.secret.metric',
          'acme-confidential',
          'customer',
          'credit_card',
          'vault_records',
          'password-reset-for-alice',
          'GET /vault',
        ]) {
          assert.equal(wire.includes(Buffer.from(needle)), false, `"${needle}" does not appear in clear`);
        }
      } finally {
        await apm.close();
        await sc.kill('SIGTERM');
        relay.close();
      }
    });

    test('a wrong access key: a typed error on both sides, shown by status, counted as rejected.badKey', async () => {
      const before = (await getJson(collector.httpPort, '/api/stats')).body.rejected.badKey;
      const parsed = parseAccessKey(key);
      const wrong = `apmk.${parsed.projectId}.${Buffer.alloc(32, 7).toString('base64url')}`;
      const sc = await tcpSidecar(join(tmp.dir, 'badkey'), '127.0.0.1', cport, wrong, ['--set', 'reconnect_schedule=1x60000,stop']);
      try {
        const s = await waitFor('the sidecar to report the error', async () => {
          const st = await statusJson(sc.socket);
          return st.upstream.lastError?.code === 'ERR_BAD_KEY' ? st : null;
        });
        assert.notEqual(s.state, 'active');
        const stats = (await getJson(collector.httpPort, '/api/stats')).body;
        assert.equal(stats.rejected.badKey, before + 1);
        assert.ok(
          collector.lines.some((l) => l.code === 'ERR_BAD_KEY'),
          'the collector logged the typed error',
        );
        assert.equal(
          collector.raw.some((l) => l.includes(Buffer.alloc(32, 7).toString('base64url'))),
          false,
          'the secret is not logged',
        );
      } finally {
        await sc.kill('SIGTERM');
      }
    });

    test('tampered, replayed and oversized frames are each rejected and counted; other agents keep working', async () => {
      const sc = await tcpSidecar(join(tmp.dir, 'steady'), '127.0.0.1', cport, key, ['--set', `agent_id=steady-agent-${transport}`]);
      const apm = connect({ app: 'steady', socket: sc.socket, flushMs: 50 });
      try {
        await waitFor('active', async () => (await statusJson(sc.socket)).state === 'active');
        const base = (await getJson(collector.httpPort, '/api/stats')).body.rejected;

        // Tampered: flip one ciphertext byte of a sealed frame.
        const a = await rawAgent(cport, key, `raw-tamper-${transport}`, transport);
        const frame = a.sealer().text(Inner.TextBatch, encodeTextBatch([]));
        frame[frame.length - 3] ^= 0x40;
        a.sock.write(frame);
        await waitFor('the tampered session to be closed', () => a.closed());

        // Replayed: the same valid frame twice.
        const b = await rawAgent(cport, key, `raw-replay-${transport}`, transport);
        const good = b.sealer().text(Inner.TextBatch, encodeTextBatch([]));
        b.sock.write(good);
        await waitFor('the first copy to be acked', () => b.inner.includes(Inner.Ack));
        b.sock.write(good);
        await waitFor('the replaying session to be closed', () => b.closed());

        // Oversized: a header declaring more than max_frame_bytes (65536 here).
        const c = await rawAgent(cport, key, `raw-big-${transport}`, transport);
        const header = Buffer.alloc(5);
        header.writeUInt32LE(65537 + 1, 0);
        header[4] = UpstreamType.Text;
        c.sock.write(header);
        await waitFor('the oversized session to be closed', () => c.closed());

        const after = (await getJson(collector.httpPort, '/api/stats')).body.rejected;
        assert.equal(after.tampered, base.tampered + 1);
        assert.equal(after.replay, base.replay + 1);
        assert.equal(after.tooLarge, base.tooLarge + 1);

        apm.counter('steady.n').add(9);
        assert.equal(await apm.flush(), true);
        await waitFor('the steady agent’s data to be stored', async () => (await metricSum(collector, 'steady.n')).sum === 9);
        assert.equal((await statusJson(sc.socket)).state, 'active');
        assert.equal(collector.alive, true);
      } finally {
        await apm.close();
        await sc.kill('SIGTERM');
      }
    });
  });

  describe(`upstream failover and the reconnect schedule over ${transport}`, () => {
    const tmp = tempDir();
    after(() => tmp.cleanup());

    test('two collectors in server_host: kill the first, fail over, nothing acknowledged is lost or doubled', async () => {
      const data = join(tmp.dir, 'shared');
      const key = await createKey(data, 'fo');
      const a = await startCollector(data, []);
      const b = await startCollector(data, ['--host', '127.0.0.2', '--port', String(a.port), '--http', `127.0.0.2:${a.httpPort}`]).catch(() => null);
      if (b === null) {
        await a.kill('SIGKILL');
        throw new Error('could not start a second collector on 127.0.0.2 with the same port');
      }
      const sc = await tcpSidecar(join(tmp.dir, 'fo'), '127.0.0.1,127.0.0.2', portFor(transport, a), key, ['--set', 'agent_id=fo-agent']);
      const apm = connect({ app: 'fo', socket: sc.socket, flushMs: 50 });
      try {
        await waitFor('active on the first', async () => {
          const s = await statusJson(sc.socket);
          return s.state === 'active' && s.upstream.server === `127.0.0.1:${portFor(transport, a)}`;
        });
        const n = apm.counter('fo.n');
        for (let i = 0; i < 100; i++) n.add(1);
        assert.equal(await apm.flush(), true);
        await waitFor('the first 100 stored', async () => (await metricSum(a, 'fo.n')).sum === 100);
        await waitFor('nothing in flight', async () => (await statusJson(sc.socket)).upstream.inFlightFrames === 0);

        await a.kill('SIGKILL');
        for (let round = 0; round < 4; round++) {
          for (let i = 0; i < 50; i++) n.add(1);
          await sleep(60);
        }
        assert.equal(await apm.flush(), true);
        await waitFor('active on the second', async () => {
          const s = await statusJson(sc.socket);
          return s.state === 'active' && s.upstream.server === `127.0.0.2:${portFor(transport, a)}`;
        });
        await waitFor('all 300 stored, through the second', async () => (await metricSum(b, 'fo.n')).sum === 300, 15000);
        await sleep(500);
        assert.equal((await metricSum(b, 'fo.n')).sum, 300, 'no duplicate after settling');
        assert.ok(sc.logs('connecting → active').length + sc.logs(/→ active/).length >= 1);
      } finally {
        await apm.close();
        await sc.kill('SIGTERM');
        await b.kill('SIGTERM');
      }
    });

    // That nothing is attempted after `stopped`, and the real 5–10 s timeline, are proven on a fake
    // clock (unit/link.test.ts); this is the same behaviour end to end, in real processes.
    test('the whatap schedule (scaled), end to end: three attempts 200–400 ms apart, then stopped; `apm-sidecar reconnect` tries again', async () => {
      const data = join(tmp.dir, 'wt');
      const key = await createKey(data, 'wt');
      let c = await startCollector(data);
      const port = portFor(transport, c);
      const sc = await tcpSidecar(join(tmp.dir, 'wt-sc'), '127.0.0.1', port, key, ['--profile', 'whatap', '--set', 'reconnect_schedule=3x200-400,stop']);
      try {
        await waitFor('active', async () => (await statusJson(sc.socket)).state === 'active');
        const connectsBefore = sc.logs('connecting upstream').length;
        await c.kill('SIGKILL');
        const s = await waitFor('stopped', async () => {
          const st = await statusJson(sc.socket);
          return st.state === 'stopped' ? st : null;
        });
        const attempts = sc.logs('connecting upstream').slice(connectsBefore);
        assert.equal(attempts.length, 3, 'exactly three attempts after the loss');
        const planned = sc.lines.filter((l) => l.event === 'reconnect-scheduled').map((l) => l.delayMs as number);
        assert.equal(planned.length, 3);
        for (const d of planned) assert.ok(d >= 200 && d <= 400, `delay ${d} within 200–400 ms`);
        const times = attempts.map((l) => Date.parse(l.time as string));
        for (let i = 1; i < times.length; i++)
          assert.ok((times[i] as number) - (times[i - 1] as number) >= 190, 'attempts are at least the minimum delay apart');
        assert.equal(s.upstream.nextAttemptAt, null);
        assert.ok(sc.logs(/→ stopped/).length === 1, 'one log line for the transition');

        c = await startCollector(data, transport === 'tcp' ? ['--port', String(port)] : ['--http', `127.0.0.1:${port}`]);
        const r = await runCli(['reconnect', '--socket', sc.socket]);
        assert.equal(r.code, 0, r.stderr);
        await waitFor('active again', async () => (await statusJson(sc.socket)).state === 'active');
      } finally {
        await sc.kill('SIGTERM');
        await c.kill('SIGTERM');
      }
    });
  });
}

describe('licenses', () => {
  const tmp = tempDir();
  after(() => tmp.cleanup());

  test('configuration and license come before active: an agent without a license is told so, status says why, and it retries', async () => {
    const data = join(tmp.dir, 'lic');
    const key = await createKey(data, 'lic');
    const c = await startCollector(data, ['--licenses', '1', '--set', 'license_release_ms=300']);
    const first = await upstreamSidecar('tcp', join(tmp.dir, 'lic-a'), '127.0.0.1', c.port, key, ['--set', 'agent_id=lic-a']);
    let second: SidecarProc | null = null;
    try {
      await waitFor('the first agent to be active', async () => (await statusJson(first.socket)).state === 'active');
      second = await upstreamSidecar('http', join(tmp.dir, 'lic-b'), '127.0.0.1', c.httpPort, key, [
        '--set',
        'agent_id=lic-b',
        '--set',
        'reconnect_schedule=200',
      ]);
      const s = await waitFor('the second agent to be refused', async () => {
        const st = await statusJson((second as SidecarProc).socket);
        return st.upstream.lastError?.code === 'ERR_NO_LICENSE' ? st : null;
      });
      assert.notEqual(s.state, 'active');
      assert.match(s.upstream.lastError.message, /no license/);
      const agents = (await getJson<any[]>(c.httpPort, '/api/agents')).body;
      assert.equal(agents.find((a) => a.agentId === 'lic-b')?.licensed, false);

      // The first goes away; after license_release_ms its license is free and the retrying second takes it.
      await first.kill('SIGKILL');
      await waitFor('the second agent to get the freed license', async () => (await statusJson((second as SidecarProc).socket)).state === 'active', 15000);
      const after = (await getJson<any[]>(c.httpPort, '/api/agents')).body;
      assert.equal(after.find((a) => a.agentId === 'lic-b')?.licensed, true);
    } finally {
      await second?.kill('SIGTERM');
      await first.kill('SIGTERM');
      await c.kill('SIGTERM');
    }
  });
});
