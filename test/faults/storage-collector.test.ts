/**
 * Storage faults under the collector's store (collector.db): its filesystem fills up and empties
 * again while a sidecar sends. The collector acks an upstream batch only after its commit, so a
 * batch it could not commit is refused (counted `rejected.storeFailed`), the sidecar keeps it and
 * sends it again, and the collector is back storing within 5 s of the space returning.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { cleanupsAfterEach } from '../helpers/cleanups';
import { type CollectorProc, getJson, tcpSidecar } from '../helpers/collector';
import { byLevel, RssWatch, recordFigures } from '../helpers/figures';
import { collectorSums, judge, startLoadApp, tallyOf } from '../helpers/ledger';
import { sidecarStatus } from '../helpers/outage';
import { sleep, tempDir, waitFor } from '../helpers/procs';
import { SmallDisk, mountAllowed } from '../helpers/small-disk';

const FILE = 'faults/storage-collector';
const tmp = tempDir('apm-fstore-c-');
after(() => tmp.cleanup());
const cleanups = cleanupsAfterEach();

/** Collector memory bound: its store is SQLite with a small page cache; 200 MiB is several times its idle RSS. */
const MAX_COLLECTOR_RSS_MB = 200;
const MAX_RECOVER_MS = 5000;

type Stats = { received: { metricPoints: number }; rejected: Record<string, number>; storeErrors: number };
const stats = async (c: CollectorProc): Promise<Stats> => (await getJson<Stats>(c.httpPort, '/api/stats', c.httpHost)).body;

/** A collector on its own small tmpfs, with an access key for `project`. */
async function collectorOnSmallDisk(name: string, size: string): Promise<{ disk: SmallDisk; collector: CollectorProc; key: string }> {
  const disk = await SmallDisk.mount(join(tmp.dir, `${name}-mnt`), size);
  cleanups.push(() => disk.close());
  const data = disk.path('collector');
  const keys = await disk.collectorCommand(['keys', 'create', '--project', name, '--data-dir', data]);
  assert.equal(keys.exitCode, 0, keys.stderr);
  const key = (keys.raw[keys.raw.length - 1] as string).trim();
  const collector = await disk.collector(data);
  cleanups.push(() => collector.kill('SIGKILL'));
  return { disk, collector, key };
}

describe('storage faults under the collector', { skip: mountAllowed() ? false : 'mounting a tmpfs in a private mount namespace is not permitted here' }, () => {
  test('collector.db on a full disk: batches it cannot commit are refused, not acked, and counted; the collector stays up and stores them once space returns', async () => {
    const { disk, collector, key } = await collectorOnSmallDisk('cfull', '8m');
    cleanups.push(() => disk.free());
    const sc = await tcpSidecar(join(tmp.dir, 'cfull'), collector, key, 'storage-cfull');
    cleanups.push(() => sc.kill('SIGKILL'));
    const series = Array.from({ length: 20 }, (_, i) => `storage.cfull.s${i}`);
    const app = startLoadApp(sc.socket, 'cfull', series, { TICK_MS: 10 });
    cleanups.push(() => app.kill('SIGKILL'));
    const rss = new RssWatch(() => ({ collector: collector.pid, sidecar: sc.pid, app: app.pid }));

    await waitFor('values stored before the fault', async () => (await stats(collector)).received.metricPoints > 0);
    const filled = disk.fill();
    const filledAt = Date.now();
    const refused = await waitFor(
      'a batch refused for want of space',
      async () => {
        if (!collector.alive) throw new Error(`the collector exited: ${collector.stderr}`);
        const s = await stats(collector);
        return (s.rejected.storeFailed ?? 0) > 0 ? s : null;
      },
      15000,
    );
    // The disk stays full a while: sessions come and go (reconnects, refusals) meanwhile.
    await sleep(byLevel(1500, 4000));
    assert.equal(collector.alive, true, `the collector stays up on a full disk: ${collector.stderr}`);
    const beforeFree = await stats(collector);
    disk.free();
    const freedAt = Date.now();
    await waitFor('the collector to store again', async () => (await stats(collector)).received.metricPoints > beforeFree.received.metricPoints, 15000, 10);
    const recoverMs = Date.now() - freedAt;

    await sleep(byLevel(1000, 4000));
    app.kill('SIGTERM');
    await app.exited;
    const tally = tallyOf(app);
    await waitFor(
      'the acked values at the collector',
      async () => {
        const sums = await collectorSums(collector, series);
        return series.every((n) => (sums[n] ?? 0) >= (tally.acked[n] ?? 0));
      },
      20000,
    );
    await sleep(1000); // a few intervals: a late duplicate would show
    const v = judge(tally, await collectorSums(collector, series));
    const end = await stats(collector);
    const st = await sidecarStatus(sc.socket);
    const maxRssMb = rss.stop();
    recordFigures(FILE, {
      case: 'storage/collector-tmpfs-full',
      section: 'storage',
      load: `1 app × ${series.length} counters every 10 ms through one sidecar`,
      fault: `collector data dir on an 8 MiB tmpfs filled to the last byte (${Math.round(filled / 1024)} KiB filler) for ${freedAt - filledAt} ms, then freed`,
      lost: v.lost,
      duplicated: v.duplicated,
      maxRssMb,
      recoverMs,
      extra: {
        storeFailed: end.rejected.storeFailed ?? 0,
        refusedBeforeFree: beforeFree.rejected.storeFailed ?? 0,
        firstRefusalSeen: refused.rejected.storeFailed ?? 0,
        malformed: end.rejected.malformed ?? 0,
        storeErrors: end.storeErrors,
        sidecarState: String(st.state),
      },
    });
    assert.equal(v.lost, 0, JSON.stringify(v.perSeries));
    assert.equal(v.duplicated, 0, JSON.stringify(v.perSeries));
    assert.equal(collector.alive, true);
    assert.ok(recoverMs <= MAX_RECOVER_MS, `stored again ${recoverMs} ms after the space returned`);
    assert.equal(end.rejected.malformed, 0, 'a store failure is not counted as a malformed frame');
    assert.ok((maxRssMb.collector ?? 0) <= MAX_COLLECTOR_RSS_MB, `collector RSS ${maxRssMb.collector} MiB`);
  });
});
