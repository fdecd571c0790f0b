/**
 * Storage faults under a running sidecar, judged with the ledger against the real collector:
 * its data_dir (retention.db, its WAL, sidecar.lock) on a small tmpfs that fills up under load
 * and empties again; its WAL truncated mid-page while it runs. While the retention cannot commit,
 * durable frames are refused (not acked: the shims keep and resend them, counted
 * `retentionRefused`); every value acked while there was room reaches the collector exactly once.
 * sidecar-disk-full.test.ts has the mechanics (status, /metrics, log lines) on the debug transport.
 */
import assert from 'node:assert/strict';
import { statSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { cleanupsAfterEach } from '../helpers/cleanups';
import { type CollectorProc, createKey, FAST_SIDECAR, startCollector, tcpSidecar } from '../helpers/collector';
import { byLevel, RssWatch, recordFigures } from '../helpers/figures';
import { addTallies, collectorSums, judge, type LoadApp, startLoadApp, type Tally, tallyOf } from '../helpers/ledger';
import { sidecarStatus } from '../helpers/outage';
import { sleep, tempDir, waitFor } from '../helpers/procs';
import { SmallDisk, mountAllowed } from '../helpers/small-disk';

const FILE = 'faults/storage-sidecar-disk';
const MAX_RECOVER_MS = 5000;
/** Sidecar memory bound: one app's frames waiting while the disk is full; 200 MiB is several times its idle RSS. */
const MAX_SIDECAR_RSS_MB = 200;

const tmp = tempDir('apm-fstore-d-');
after(() => tmp.cleanup());
const cleanups = cleanupsAfterEach();

let collector: CollectorProc;
let key: string;
before(async () => {
  const data = join(tmp.dir, 'collector');
  key = await createKey(data, 'fstore-disk');
  collector = await startCollector(data);
});
after(() => collector?.kill('SIGTERM'));

function loadApp(socket: string, app: string, series: string[]): LoadApp {
  const p = startLoadApp(socket, app, series, { TICK_MS: 10 });
  cleanups.push(() => p.kill('SIGKILL'));
  return p;
}

/** Wait until the collector holds every acked value, a few intervals more, then judge. */
async function settle(tally: Tally, series: string[]): Promise<ReturnType<typeof judge>> {
  await waitFor(
    'the acked values at the collector',
    async () => {
      const sums = await collectorSums(collector, series);
      return series.every((n) => (sums[n] ?? 0) >= (tally.acked[n] ?? 0));
    },
    15000,
  ).catch(() => null); // a shortfall is judged (and recorded) below
  await sleep(byLevel(600, 1500)); // a few metric intervals (200 ms): a late duplicate would show
  return judge(tally, await collectorSums(collector, series));
}

describe('storage faults under a running sidecar', () => {
  test('the data_dir on a tmpfs that fills under load and empties again: frames are refused while full, the sidecar stays up, and every acked value arrives once', {
    skip: mountAllowed() ? false : 'mounting a tmpfs in a private mount namespace is not permitted here',
  }, async () => {
    const disk = await SmallDisk.mount(join(tmp.dir, 'mnt'), '4m');
    cleanups.push(() => disk.close());
    cleanups.push(() => disk.free());
    const socket = join(tmp.dir, 'full.sock');
    const sets = ['--set', 'retention_min_free_bytes=0', '--set', 'agent_id=fstore-full', ...FAST_SIDECAR];
    const sc = await disk.sidecar(
      socket,
      ['--data-dir', disk.path('data'), '--transport', 'tcp', '--server-host', '127.0.0.1', '--server-port', String(collector.port), ...sets],
      { APM_SIDECAR_ACCESS_KEY: key },
    );
    cleanups.push(() => sc.kill('SIGKILL'));
    const series = Array.from({ length: 10 }, (_, i) => `storage.full.s${i}`);
    const app = loadApp(socket, 'full', series);
    const rss = new RssWatch(() => ({ sidecar: sc.pid, app: app.pid }));
    await waitFor('values acked before the fault', () => (tallyOf(app).acked[series[0] as string] ?? 0) > 0);

    const filled = disk.fill();
    const filledAt = Date.now();
    const failing = await waitFor('the retention to refuse frames', async () => {
      const s = await sidecarStatus(socket);
      return s.retention.condition === 'failing' && s.counters.retentionRefused > 0 ? s : null;
    });
    await sleep(byLevel(1500, 4000));
    assert.equal(sc.alive, true, `the sidecar stays up on a full disk: ${sc.stderr}`);
    const ackedWhileFull = tallyOf(app).acked[series[0] as string] ?? 0;
    disk.free();
    const freedAt = Date.now();
    await waitFor(
      'the retention to commit and ack again',
      async () => (await sidecarStatus(socket)).retention.condition === 'ok' && (tallyOf(app).acked[series[0] as string] ?? 0) > ackedWhileFull,
      15000,
      10,
    );
    const recoverMs = Date.now() - freedAt;
    await sleep(byLevel(500, 3000));
    app.kill('SIGTERM');
    await app.exited;
    const v = await settle(tallyOf(app), series);
    const s = await sidecarStatus(socket);
    const maxRssMb = rss.stop();
    recordFigures(FILE, {
      case: 'storage/sidecar-tmpfs-full',
      section: 'storage',
      load: `1 app × ${series.length} counters every 10 ms`,
      fault: `data_dir on a 4 MiB tmpfs filled to the last byte (${Math.round(filled / 1024)} KiB filler) for ${freedAt - filledAt} ms, then freed`,
      lost: v.lost,
      duplicated: v.duplicated,
      maxRssMb,
      recoverMs,
      extra: {
        refused: s.counters.retentionRefused,
        failedCommits: s.counters.retentionErrors,
        refusedWhenSeenFailing: failing.counters.retentionRefused,
        droppedDiskFull: s.counters.dropped.disk_full ?? 0,
        unackedNotDelivered: v.unacked,
      },
    });
    assert.equal(v.lost, 0, JSON.stringify(v.perSeries));
    assert.equal(v.duplicated, 0, JSON.stringify(v.perSeries));
    assert.equal(sc.alive, true);
    assert.ok(recoverMs <= MAX_RECOVER_MS, `acking again ${recoverMs} ms after the space returned`);
    assert.ok(s.counters.retentionRefused > 0, 'refused frames are counted');
    assert.ok((maxRssMb.sidecar ?? 0) <= MAX_SIDECAR_RSS_MB, `sidecar RSS ${maxRssMb.sidecar} MiB`);
  });

  test('the WAL truncated mid-page under a running sidecar: it keeps serving, and after a restart on the damaged files every acked value has arrived once', async () => {
    const dir = join(tmp.dir, 'walrun');
    const sc = await tcpSidecar(dir, collector, key, 'fstore-walrun');
    cleanups.push(() => sc.kill('SIGKILL'));
    const series = [`storage.walrun.a`, `storage.walrun.b`];
    const app1 = loadApp(sc.socket, 'walrun-1', series);
    let sidecarPid = sc.pid;
    const rss = new RssWatch(() => ({ sidecar: sidecarPid }));
    await waitFor('values acked before the fault', () => (tallyOf(app1).acked[series[0] as string] ?? 0) >= 20);
    const wal = join(`${dir}.data`, 'retention.db-wal');
    const walBytes = statSync(wal).size;
    const cut = Math.max(32 + 24 + 2048, Math.floor(walBytes / 2 / 4096) * 4096 + 2048);
    truncateSync(wal, cut);
    const cutAt = Date.now();
    const ackedAtCut = tallyOf(app1).acked[series[0] as string] ?? 0;
    await waitFor('the app acked after the cut', () => (tallyOf(app1).acked[series[0] as string] ?? 0) > ackedAtCut + 20, 10000);
    const servingMs = Date.now() - cutAt;
    await sleep(byLevel(1000, 3000));
    assert.equal(sc.alive, true, `the sidecar keeps running: ${sc.stderr}`);
    app1.kill('SIGTERM');
    await app1.exited;
    await sc.kill('SIGTERM');

    // The second app is already waiting (its shim retries the socket): the recovery measured is
    // the sidecar's, from its start to its first ack.
    const app2 = loadApp(sc.socket, 'walrun-2', series);
    await waitFor('the second app to record', () => tallyOf(app2).recorded[series[0] as string] !== undefined);
    const restartAt = Date.now();
    const second = await tcpSidecar(dir, collector, key, 'fstore-walrun');
    cleanups.push(() => second.kill('SIGKILL'));
    sidecarPid = second.pid;
    await waitFor('the restarted sidecar to ack a fresh app', () => tallyOf(app2).acked[series[0] as string] !== undefined, 15000, 10);
    const recoverMs = Date.now() - restartAt;
    await sleep(500);
    app2.kill('SIGTERM');
    await app2.exited;
    const v = await settle(addTallies(tallyOf(app1), tallyOf(app2)), series);
    const s = await sidecarStatus(second.socket);
    const maxRssMb = rss.stop();
    recordFigures(FILE, {
      case: 'storage/sidecar-wal-truncated-running',
      section: 'storage',
      load: `2 apps × ${series.length} counters every 10 ms, one before and one after a restart`,
      fault: 'retention.db-wal truncated mid-page while the sidecar runs, then SIGTERM and a restart on the same files',
      lost: v.lost,
      duplicated: v.duplicated,
      maxRssMb,
      recoverMs,
      extra: {
        walBytes,
        cutAt: cut,
        servingAfterCutMs: servingMs,
        quarantined: second.logs(/moved aside/).length > 0,
        condition: String(s.retention.condition),
        failedCommits: s.counters.retentionErrors,
      },
    });
    assert.equal(v.lost, 0, JSON.stringify(v.perSeries));
    assert.equal(v.duplicated, 0, JSON.stringify(v.perSeries));
    assert.ok(recoverMs <= MAX_RECOVER_MS, `serving ${recoverMs} ms after the restart`);
    assert.equal(s.retention.condition, 'ok');
  });
});
