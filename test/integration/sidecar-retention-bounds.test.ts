/**
 * The retention's space bounds (DESIGN §8): beyond retention_max_bytes the
 * oldest retained metrics are dropped and counted `disk_full`, apart from
 * `expired`; everything not dropped reaches the real collector once it is back.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { connect } from '@apm-sidecar/shim';
import { cleanupsAfterEach } from '../helpers/cleanups';
import { createKey, getJson, startCollector } from '../helpers/collector';
import { Gate, sidecarStatus } from '../helpers/outage';
import { sleep, startSidecar, tempDir, waitFor } from '../helpers/procs';

type Json = Record<string, any>;

const tmp = tempDir('apm-bounds-');
after(() => tmp.cleanup());

const cleanups = cleanupsAfterEach();

const SERIES = 600;
const ROUNDS = 12;
const MAX_BYTES = 196608;

describe('retention space bounds', () => {
  test('beyond retention_max_bytes the oldest retained metrics are dropped and counted disk_full (not expired); the rest reaches the collector', async () => {
    const data = join(tmp.dir, 'collector');
    const key = await createKey(data);
    const collector = await startCollector(data);
    cleanups.push(() => collector.kill('SIGKILL'));
    const gate = new Gate(collector.port);
    await gate.open();
    await gate.cut(); // the collector is unreachable: closed intervals pile up in the retention
    cleanups.push(() => gate.cut());

    const sets = {
      agent_id: 'bounds',
      flush_ms: 50,
      metric_interval_ms: 100,
      tcp_connection_timeout: 300,
      reconnect_schedule: '1000x200',
      retention_ms: 600000,
      retention_max_bytes: MAX_BYTES,
      retention_min_free_bytes: 0,
    };
    const sc = await startSidecar(
      join(tmp.dir, 'sidecar'),
      [
        '--transport',
        'tcp',
        '--server-host',
        '127.0.0.1',
        '--server-port',
        String(gate.port),
        ...Object.entries(sets).flatMap(([k, v]) => ['--set', `${k}=${v}`]),
      ],
      { APM_SIDECAR_ACCESS_KEY: key },
    );
    cleanups.push(() => sc.kill('SIGKILL'));
    const apm = connect({ socket: sc.socket, app: 'bounds', flushMs: 3_600_000, reconnectMinMs: 20, reconnectMaxMs: 200 });
    cleanups.push(() => apm.close());
    await waitFor('the welcome', () => apm.state !== 'connecting' && apm.state !== 'disconnected');

    // Round r records the value r once in each of SERIES series: one interval, SERIES points.
    // Each round starts just after an interval boundary, so no two rounds share an interval
    // (then a dropped point is one recorded value, and counts compare).
    for (let r = 1; r <= ROUNDS; r++) {
      await sleep(100 - (Date.now() % 100) + 20);
      for (let i = 0; i < SERIES; i++) apm.counter('bounds.value', { series: `s${i}` }).add(r);
      assert.equal(await apm.flush(), true);
    }
    const s = await waitFor(
      'the oldest packs to be dropped for space',
      async () => {
        const x = await sidecarStatus(sc.socket);
        return (x.counters.dropped.disk_full ?? 0) > 0 && x.retention.usedBytes <= MAX_BYTES ? x : null;
      },
      15000,
    );
    assert.equal(s.counters.dropped.expired ?? 0, 0, 'nothing is counted expired: retention_ms is far away');
    assert.equal(s.counters.dropped.disk_full % SERIES, 0, 'whole intervals are dropped');
    assert.ok(s.counters.dropped.disk_full < ROUNDS * SERIES, 'only the oldest: the newest stay within the bound');
    assert.equal(sc.logs(/beyond its space bounds \(max_bytes\)/).length, 1, 'one log line when dropping starts');

    await gate.open();
    await waitFor('the retention to drain', async () => (await sidecarStatus(sc.socket)).retention.packs === 0, 20000);
    await waitFor('the end of the episode', () => sc.logs('within its space bounds again').length === 1);
    const dropped = (await sidecarStatus(sc.socket)).counters.dropped.disk_full as number;
    let pts: Json[] = [];
    let delivered = 0;
    await waitFor(
      'every point to be delivered or counted disk_full',
      async () => {
        pts = (await getJson(collector.httpPort, '/api/metrics?agent=bounds&name=bounds.value&limit=10000')).body as Json[];
        delivered = pts.reduce((a, p) => a + p.count, 0);
        return delivered + dropped >= ROUNDS * SERIES;
      },
      10000,
    ).catch(() => undefined);
    assert.equal(delivered + dropped, ROUNDS * SERIES, 'every point is either delivered or counted disk_full, none both');
    const rounds = [...new Set(pts.map((p) => p.sum as number))].sort((a, b) => a - b);
    const kept = delivered / SERIES;
    assert.deepEqual(
      rounds,
      Array.from({ length: kept }, (_, i) => ROUNDS - kept + 1 + i),
      'the oldest intervals are the ones dropped, the newest are delivered',
    );
  });
});
