import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { runCli, startSidecar, tempDir, totalCount, waitFor } from '../helpers/procs';

describe('DogStatsD input (dogstatsd_udp, dogstatsd_socket)', () => {
  const tmp = tempDir();
  after(() => tmp.cleanup());

  test('lines on UDP and on the Unix datagram socket join the same aggregation', async () => {
    const dsock = join(tmp.dir, 'dsd.sock');
    const sc = await startSidecar(join(tmp.dir, 'dsd'), [
      '--set',
      'flush_ms=50',
      '--set',
      'metric_interval_ms=200',
      '--set',
      'dogstatsd_udp=127.0.0.1:0',
      '--set',
      `dogstatsd_socket=${dsock}`,
    ]);
    // Both client sockets are closed in `finally`: an open one would keep this test file's
    // process alive after a failed assertion.
    const udp = createSocket('udp4');
    const { createSocket: createUnix } = await import('unix-dgram');
    const ux = createUnix('unix_dgram');
    try {
      const st = JSON.parse((await runCli(['status', '--json', '--socket', sc.socket])).stdout);
      const port = st.dogstatsd.udpPort as number;
      assert.ok(port > 0);
      for (let i = 0; i < 10; i++) udp.send(`dsd.hits:1|c|#via:udp\ndsd.lat:${i + 1}|ms`, port, '127.0.0.1');
      for (let i = 0; i < 5; i++) {
        const b = Buffer.from('dsd.hits:1|c|#via:unix');
        ux.send(b, 0, b.length, dsock);
      }
      // Every line, not only the first: the two sockets' lines may land in different intervals.
      await waitFor('the lines to be aggregated and emitted', () => totalCount(sc, 'dsd.hits') >= 15 && totalCount(sc, 'dsd.lat') >= 10);
      const pts = sc.packs('metrics').flatMap((p) => p.points as any[]);
      const sumOf = (via: string) => pts.filter((p) => p.name === 'dsd.hits' && p.tags.via === via).reduce((a, p) => a + p.sum, 0);
      assert.equal(sumOf('udp'), 10);
      assert.equal(sumOf('unix'), 5);
      const lat = pts.filter((p) => p.name === 'dsd.lat');
      assert.equal(
        lat.reduce((a, p) => a + p.count, 0),
        10,
      );
      const s2 = JSON.parse((await runCli(['status', '--json', '--socket', sc.socket])).stdout);
      assert.equal(s2.dogstatsd.invalid, 0);
      assert.equal(s2.dogstatsd.packets, 15);
    } finally {
      udp.close();
      ux.close();
      await sc.kill('SIGTERM');
    }
  });

  test('max_series bounds the DogStatsD flush window: the line of one series more is refused (series_limit) and counted in status', async () => {
    const sc = await startSidecar(join(tmp.dir, 'dsd-max'), ['--set', 'flush_ms=60000', '--set', 'max_series=2', '--set', 'dogstatsd_udp=127.0.0.1:0']);
    const udp = createSocket('udp4');
    try {
      const st = JSON.parse((await runCli(['status', '--json', '--socket', sc.socket])).stdout);
      udp.send('a:1|c\nb:1|c\nc:1|c\na:1|c', st.dogstatsd.udpPort as number, '127.0.0.1');
      const status = async () => JSON.parse((await runCli(['status', '--json', '--socket', sc.socket])).stdout);
      const s2 = await waitFor('the datagram to be read', async () => {
        const s = await status();
        return s.dogstatsd.lines === 4 ? s : null;
      });
      assert.deepEqual(s2.dogstatsd.invalidByReason, { series_limit: 1 });
      assert.equal(s2.dogstatsd.metrics, 3);
    } finally {
      udp.close();
      await sc.kill('SIGTERM');
    }
  });
});
