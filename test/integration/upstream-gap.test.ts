// Frames lost on the upstream (issue 8, case 3): a relay that drops the sealed numeric frames for a
// while and forwards everything else. Frame counters must be exactly consecutive, so the collector
// ends the session with ERR_FRAME_GAP, the sidecar resends everything unacked on the next session,
// and the collector's totals equal what the app recorded. A clear-text HandshakeRejected injected
// after the handshake is a protocol error, not a refusal.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { UpstreamType } from '@apm-sidecar/proto/upstream';
import { connect } from '@apm-sidecar/shim';
import { type CollectorProc, collectorPerSuite, counterSum, getJson } from '../helpers/collector';
import { FrameRelay } from '../helpers/frame-relay';
import { RecordingCollector } from '../helpers/outage';
import { sleep, startSidecar, statusJson, waitFor } from '../helpers/procs';

const FAST = ['--set', 'flush_ms=50', '--set', 'metric_interval_ms=200', '--set', 'tcp_connection_timeout=1000', '--set', 'reconnect_schedule=1x200'];

describe('frames lost between the sidecar and the collector', () => {
  let collector: CollectorProc;
  let key: string;
  const tmp = collectorPerSuite('gap', [], (c, k) => {
    collector = c;
    key = k;
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
      await waitFor('the sidecar to be active', async () => (await statusJson(sc.socket)).state === 'active');
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

      await waitFor(
        `the collector's total to equal the ${recorded} recorded`,
        async () => (await counterSum(collector, 'gap.orders')) === recorded,
        20000,
      ).catch(async (err: Error) => {
        throw new Error(`${err.message}: ${await counterSum(collector, 'gap.orders')} stored`);
      });
      // The collector's sealed error names the code; the sidecar counts sessions ended by code.
      assert.ok((await statusJson(sc.socket)).upstream.sessionErrors?.ERR_FRAME_GAP >= 1, 'the sidecar saw the session end with ERR_FRAME_GAP');
      const stats = (await getJson(collector.httpPort, '/api/stats')).body;
      assert.ok(stats.rejected.frameGap >= before.frameGap + 1, 'counted as rejected.frameGap');
      assert.ok(
        collector.lines.some((l) => l.code === 'ERR_FRAME_GAP'),
        'the collector logged the typed error',
      );
      const s2 = await statusJson(sc.socket);
      assert.ok(s2.upstream.sessions >= 2 && relay.accepted >= 2, 'the sidecar reconnected (through the relay) and resent');
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

  test('a dropped collector → agent frame (an ack) ends the session on the sidecar with ERR_FRAME_GAP; the resend is stored once', async () => {
    const relay = new FrameRelay(collector.port);
    await relay.listen();
    const sc = await startSidecar(
      join(tmp.dir, 'down'),
      ['--transport', 'tcp', '--server-host', '127.0.0.1', '--server-port', String(relay.port), ...FAST, '--set', 'agent_id=down-agent'],
      { APM_SIDECAR_ACCESS_KEY: key },
    );
    const apm = connect({ app: 'down', socket: sc.socket, flushMs: 50 });
    try {
      await waitFor('the sidecar to be active', async () => (await statusJson(sc.socket)).state === 'active');
      const m = apm.counter('down.orders');
      let recorded = 0;
      // Exactly one sealed frame from the collector is lost: the next one arrives with a gap.
      let budget = 1;
      relay.dropDown = (type) => type === UpstreamType.Text && budget-- > 0;
      for (let i = 0; i < 300; i++) {
        m.add(1);
        recorded++;
        await sleep(5);
      }
      assert.equal(await apm.flush(), true);
      await waitFor('one collector frame to be dropped', () => relay.droppedDown === 1);
      await waitFor('the sidecar to end the session with ERR_FRAME_GAP', async () => (await statusJson(sc.socket)).upstream.sessionErrors?.ERR_FRAME_GAP >= 1);
      await waitFor('the sidecar to reconnect', async () => {
        const s = await statusJson(sc.socket);
        return s.state === 'active' && s.upstream.sessions >= 2;
      });
      await waitFor(`the collector's total to equal the ${recorded} recorded`, async () => (await counterSum(collector, 'down.orders')) === recorded, 20000);
      await sleep(500);
      assert.equal(await counterSum(collector, 'down.orders'), recorded, 'resent packs are stored once');
    } finally {
      await apm.close();
      await sc.kill('SIGTERM');
      relay.close();
    }
  });

  test('an ack never covers a frame the collector did not store: the sidecar ends the session (ERR_ACK_GAP) and resends it', async () => {
    const rec = new RecordingCollector();
    await rec.open();
    const sc = await startSidecar(
      join(tmp.dir, 'ackgap'),
      ['--transport', 'tcp', '--server-host', '127.0.0.1', '--server-port', String(rec.port), ...FAST, '--set', 'agent_id=ackgap-agent'],
      { APM_SIDECAR_ACCESS_KEY: rec.key },
    );
    const apm = connect({ app: 'ackgap', socket: sc.socket, flushMs: 50 });
    try {
      await waitFor('the sidecar to be active', async () => (await statusJson(sc.socket)).state === 'active');
      // The collector fails to store the second data frame it gets, then stores and acks the third.
      rec.lose = (frame) => frame === 2;
      for (let i = 1; i <= 4; i++) {
        apm.event({ type: 'note', message: `ackgap ${i}` });
        assert.equal(await apm.flush(), true);
        await waitFor(`event ${i} to be sent`, async () => (await statusJson(sc.socket)).upstream.framesSent >= i + 2);
        await sleep(100);
      }
      await waitFor('every event to reach the collector', () => [1, 2, 3, 4].every((i) => rec.received.some((r) => r.label === `ackgap ${i}`)));
      assert.ok((await statusJson(sc.socket)).upstream.sessionErrors?.ERR_ACK_GAP >= 1, 'the session ended with ERR_ACK_GAP');
      assert.ok(rec.sessions >= 2, 'resent on a new session');
    } finally {
      await apm.close();
      await sc.kill('SIGTERM');
      await rec.cut();
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
      await waitFor('the sidecar to be active', async () => (await statusJson(sc.socket)).state === 'active');
      const body = Buffer.from(JSON.stringify({ code: 'ERR_BAD_KEY', message: 'forged refusal' }));
      const frame = Buffer.alloc(5 + body.length);
      frame.writeUInt32LE(body.length + 1, 0);
      frame[4] = UpstreamType.HandshakeRejected;
      body.copy(frame, 5);
      relay.injectDown(frame);
      const st = await waitFor('the session to end with ERR_UNEXPECTED_MESSAGE', async () => {
        const s = await statusJson(sc.socket);
        return s.upstream.sessionErrors?.ERR_UNEXPECTED_MESSAGE >= 1 ? s : null;
      });
      assert.equal(st.upstream.sessionErrors.ERR_BAD_KEY, undefined, 'the forged refusal was not honoured');
      await waitFor('the sidecar to reconnect', async () => (await statusJson(sc.socket)).state === 'active');
    } finally {
      await sc.kill('SIGTERM');
      relay.close();
    }
  });
});
