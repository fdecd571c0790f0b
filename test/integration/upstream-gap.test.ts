// Frames lost on the upstream (issue 8, case 3): a relay that drops the sealed numeric frames for a
// while and forwards everything else. Frame counters must be exactly consecutive, so the collector
// ends the session with ERR_FRAME_GAP, the sidecar resends everything unacked on the next session,
// and the collector's totals equal what the app recorded. A clear-text HandshakeRejected injected
// after the handshake is a protocol error, not a refusal.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { UpstreamType } from '@apm-sidecar/proto/upstream';
import { connect } from '@apm-sidecar/shim';
import { type CollectorProc, createKey, getJson, startCollector } from '../helpers/collector';
import { FrameRelay } from '../helpers/frame-relay';
import { runCli, sleep, startSidecar, tempDir, waitFor } from '../helpers/procs';

const FAST = ['--set', 'flush_ms=50', '--set', 'metric_interval_ms=200', '--set', 'tcp_connection_timeout=1000', '--set', 'reconnect_schedule=1x200'];

async function status(socket: string): Promise<Record<string, any>> {
  const r = await runCli(['status', '--json', '--socket', socket]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout);
}

async function counterSum(c: CollectorProc, name: string): Promise<number> {
  const r = await getJson<any[]>(c.httpPort, `/api/metrics?name=${encodeURIComponent(name)}`, c.httpHost);
  assert.equal(r.status, 200);
  return r.body.reduce((a, p) => a + p.sum, 0);
}

describe('frames lost between the sidecar and the collector', () => {
  const tmp = tempDir();
  let collector: CollectorProc;
  let key: string;
  before(async () => {
    const data = join(tmp.dir, 'collector');
    key = await createKey(data, 'gap');
    collector = await startCollector(data);
  });
  after(async () => {
    await collector.kill('SIGTERM');
    tmp.cleanup();
  });

  test('dropped numeric frames end the session with ERR_FRAME_GAP; the sidecar resends and the totals are exact', async () => {
    const relay = new FrameRelay(collector.port);
    await relay.listen();
    const sc = await startSidecar(
      join(tmp.dir, 'gap'),
      ['--transport', 'tcp', '--server-host', '127.0.0.1', '--server-port', String(relay.port), ...FAST, '--set', 'agent_id=gap-agent'],
      {
        APM_SIDECAR_ACCESS_KEY: key,
      },
    );
    const apm = connect({ app: 'gap', socket: sc.socket, flushMs: 50 });
    try {
      await waitFor('the sidecar to be active', async () => (await status(sc.socket)).state === 'active');
      const before = (await getJson(collector.httpPort, '/api/stats')).body.rejected;
      const orders = apm.counter('gap.orders');
      let recorded = 0;
      const record = async (ms: number): Promise<void> => {
        const end = Date.now() + ms;
        while (Date.now() < end) {
          orders.add(1);
          recorded++;
          await sleep(2);
        }
      };
      await record(600);
      relay.dropUp = (type) => type === UpstreamType.Numeric;
      await record(1500);
      await waitFor('numeric frames to be dropped', () => relay.droppedUp >= 3);
      relay.dropUp = () => false;
      await record(600);
      assert.equal(await apm.flush(), true);

      // The collector's sealed error names the code; the sidecar counts sessions ended by code.
      await waitFor('the session to end with ERR_FRAME_GAP', async () => (await status(sc.socket)).upstream.sessionErrors?.ERR_FRAME_GAP >= 1);
      const stats = (await getJson(collector.httpPort, '/api/stats')).body;
      assert.ok(stats.rejected.frameGap >= before.frameGap + 1, 'counted as rejected.frameGap');
      assert.ok(
        collector.lines.some((l) => l.code === 'ERR_FRAME_GAP'),
        'the collector logged the typed error',
      );
      await waitFor('the sidecar to reconnect', async () => {
        const s = await status(sc.socket);
        return s.state === 'active' && s.upstream.sessions >= 2;
      });
      assert.ok(relay.accepted >= 2, 'a new session through the relay');
      await waitFor(`the collector's total to equal the ${recorded} recorded`, async () => (await counterSum(collector, 'gap.orders')) === recorded, 20000);
      // Exact, not at least: nothing doubled either, and it stays so.
      await sleep(500);
      assert.equal(await counterSum(collector, 'gap.orders'), recorded);
      const metrics = await (await fetch(`http://${collector.httpHost}:${collector.httpPort}/metrics`)).text();
      assert.match(metrics, /apm_collector_rejected_total\{reason="frameGap"\} [1-9]/);
    } finally {
      await apm.close();
      await sc.kill('SIGTERM');
      relay.close();
    }
  });

  test('a HandshakeRejected frame after the handshake is a protocol error, not a refusal', async () => {
    const relay = new FrameRelay(collector.port);
    await relay.listen();
    const sc = await startSidecar(
      join(tmp.dir, 'inject'),
      ['--transport', 'tcp', '--server-host', '127.0.0.1', '--server-port', String(relay.port), ...FAST, '--set', 'agent_id=inject-agent'],
      {
        APM_SIDECAR_ACCESS_KEY: key,
      },
    );
    try {
      await waitFor('the sidecar to be active', async () => (await status(sc.socket)).state === 'active');
      const body = Buffer.from(JSON.stringify({ code: 'ERR_BAD_KEY', message: 'forged refusal' }));
      const frame = Buffer.alloc(5 + body.length);
      frame.writeUInt32LE(body.length + 1, 0);
      frame[4] = UpstreamType.HandshakeRejected;
      body.copy(frame, 5);
      relay.injectDown(frame);
      const st = await waitFor('the session to end with ERR_UNEXPECTED_MESSAGE', async () => {
        const s = await status(sc.socket);
        return s.upstream.sessionErrors?.ERR_UNEXPECTED_MESSAGE >= 1 ? s : null;
      });
      assert.equal(st.upstream.sessionErrors.ERR_BAD_KEY, undefined, 'the forged refusal was not honoured');
      await waitFor('the sidecar to reconnect', async () => (await status(sc.socket)).state === 'active');
    } finally {
      await sc.kill('SIGTERM');
      relay.close();
    }
  });
});
