/**
 * Storage faults under the collector's store (collector.db): its filesystem fills up and empties
 * again while a sidecar sends; collector.db damaged while the collector is down. The collector acks an upstream batch only after its commit, so a
 * batch it could not commit is refused (counted `rejected.storeFailed`), the sidecar keeps it and
 * sends it again, and the collector is back storing within 5 s of the space returning.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, closeSync, mkdirSync, openSync, readSync, statSync, truncateSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { after, describe, test } from 'node:test';
import { cleanupsAfterEach } from '../helpers/cleanups';
import { COLLECTOR_CLI, type CollectorProc, createKey, getJson, runCollector, startCollector, tcpSidecar } from '../helpers/collector';
import { byLevel, RssWatch, recordFigures } from '../helpers/figures';
import { addTallies, collectorSums, judge, startLoadApp, tallyOf } from '../helpers/ledger';
import { sidecarStatus } from '../helpers/outage';
import { Proc, sleep, tempDir, waitFor } from '../helpers/procs';
import { SmallDisk, mountAllowed } from '../helpers/small-disk';

const FILE = 'faults/storage-collector';
const tmp = tempDir('apm-fstore-c-');
// A collector run as nobody must reach its data directory below this one.
chmodSync(tmp.dir, 0o711);
const NOBODY = 65534;
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
    await sleep(byLevel(600, 1500)); // a few metric intervals (200 ms): a late duplicate would show
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

  test("collector.db's WAL torn in the middle of its last frame (a crash during a write): the collector starts on the earlier state and every acked value is there once", async () => {
    await corruptCase({
      id: 'storage/collector-wal-truncated',
      name: 'cwal',
      fault: 'collector kill -9 after its last write, then collector.db-wal truncated in the middle of the page of its last frame, then a restart',
      stop: 'SIGKILL',
      damage: (dbPath) => {
        const wal = `${dbPath}-wal`;
        const size = statSync(wal).size;
        const frames = Math.floor((size - 32) / (24 + 4096));
        assert.ok(frames >= 2, `a WAL of ${size} bytes`);
        const cut = 32 + (frames - 1) * (24 + 4096) + 24 + 2048;
        truncateSync(wal, cut);
        return { walBytes: size, cutAt: cut };
      },
    });
  });

  test('bytes flipped in the index pages of the metric tables of collector.db while the collector was down: the collector rebuilds the file from its tables and stores again', async () => {
    await corruptCase({
      id: 'storage/collector-db-corrupt',
      name: 'cidx',
      fault: "SIGTERM, then 64 bytes flipped in the root page of every index of collector.db's metric tables, then a restart",
      stop: 'SIGTERM',
      damage: (dbPath) => {
        const db = new Database(dbPath, { readonly: true });
        const pageSize = db.pragma('page_size', { simple: true }) as number;
        const roots = (db.prepare("SELECT rootpage FROM sqlite_schema WHERE type = 'index' AND tbl_name LIKE 'metric%'").all() as { rootpage: number }[]).map(
          (r) => r.rootpage,
        );
        db.close();
        for (const root of roots) flipBytes(dbPath, (root - 1) * pageSize + 12, 64);
        return { indexPagesFlipped: roots.length };
      },
      check: (c) => {
        const rebuilt = c.logs(/had a damaged page: rebuilt from its tables/);
        assert.equal(rebuilt.length, 1, 'rebuilt once, logged once');
        assert.equal(rebuilt[0]?.stoppedAt, null, 'every table read to its end');
      },
    });
  });
});

test('collector.db made unreadable (chmod 000 by its owner) while the collector was down: the collector gives its own file 0600 back and starts with everything it stored', async () => {
  await corruptCase({
    id: 'storage/collector-db-unreadable',
    name: 'cmode',
    fault: 'collector (as nobody) SIGTERM, then collector.db chmod 000 by its owner (nobody), then a restart as nobody',
    stop: 'SIGTERM',
    asNobody: true,
    damage: (dbPath) => {
      const r = spawnSync('runuser', ['-u', 'nobody', '--', 'chmod', '000', dbPath], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      return { mode: '000' };
    },
    check: (c) => {
      assert.equal(statSync(join(c.dataDir, 'collector.db')).mode & 0o777, 0o600);
      assert.equal(c.logs(/restored to 0600/).length, 1, 'logged once');
    },
  });
});

/** XOR `n` bytes of `path` at `offset` with 0xff. */
function flipBytes(path: string, offset: number, n: number): void {
  const fd = openSync(path, 'r+');
  try {
    const b = Buffer.alloc(n);
    const got = readSync(fd, b, 0, n, offset);
    for (let i = 0; i < got; i++) b[i] = (b[i] as number) ^ 0xff;
    writeSync(fd, b, 0, got, offset);
  } finally {
    closeSync(fd);
  }
}

/** `apm-collector run` as nobody (setpriv execs it: signals reach the collector itself); resolves once it listens. */
async function collectorAsNobody(dataDir: string, port: number): Promise<CollectorProc> {
  const args = [
    `--reuid=${NOBODY}`,
    `--regid=${NOBODY}`,
    '--clear-groups',
    process.execPath,
    COLLECTOR_CLI,
    'run',
    '--port',
    String(port),
    '--host',
    '127.0.0.1',
  ];
  const p = new Proc(spawn('setpriv', [...args, '--http', '127.0.0.1:0', '--data-dir', dataDir], { stdio: ['ignore', 'pipe', 'pipe'] })) as CollectorProc;
  cleanups.push(() => p.kill('SIGKILL'));
  const line = await waitFor('the collector to listen', () => {
    if (!p.alive) throw new Error(`collector exited ${p.exitCode}: ${p.stderr}`);
    return p.lines.find((l) => l.msg === 'listening');
  });
  p.port = (line.agents as { port: number }).port;
  p.httpPort = (line.http as { port: number }).port;
  p.httpHost = (line.http as { host: string }).host;
  p.dataDir = dataDir;
  return p;
}

interface CorruptCase {
  id: string;
  name: string;
  fault: string;
  stop: 'SIGKILL' | 'SIGTERM';
  /** Run the collector as nobody (root ignores file modes). */
  asNobody?: boolean;
  damage: (dbPath: string) => Record<string, number | string | boolean>;
  /** Checked on the restarted collector once it stored again. */
  check?: (c: CollectorProc) => void;
}

/**
 * An app sends through a sidecar until everything it recorded is acked and stored; the sidecar
 * stops (the collector's last write is the agent's state); the collector stops, its files are
 * damaged, it starts again on them, and a second app and sidecar send to it. Both apps' totals
 * are judged at the restarted collector.
 */
async function corruptCase(c: CorruptCase): Promise<void> {
  const data = join(tmp.dir, `${c.name}-collector`);
  let key: string;
  if (c.asNobody === true) {
    mkdirSync(data, { mode: 0o700 });
    chownSync(data, NOBODY, NOBODY);
    const r = await runCollector(['keys', 'create', '--project', c.name, '--data-dir', data], { asUser: 'nobody' });
    assert.equal(r.code, 0, r.stderr);
    key = (r.stdout.trim().split('\n').pop() as string).trim();
  } else key = await createKey(data, c.name);
  const start = (port: number): Promise<CollectorProc> =>
    c.asNobody === true ? collectorAsNobody(data, port) : startCollector(data, ['--port', String(port)]);
  const first = await start(0);
  cleanups.push(() => first.kill('SIGKILL'));
  const series = [`storage.${c.name}.a`, `storage.${c.name}.b`];
  const sc1 = await tcpSidecar(join(tmp.dir, `${c.name}-1`), first, key, `fstore-${c.name}`);
  cleanups.push(() => sc1.kill('SIGKILL'));
  const app1 = startLoadApp(sc1.socket, `${c.name}-1`, series);
  cleanups.push(() => app1.kill('SIGKILL'));
  let collectorPid = first.pid;
  const rss = new RssWatch(() => ({ collector: collectorPid }));
  await waitFor('values acked', () => (tallyOf(app1).acked[series[0] as string] ?? 0) >= byLevel(30, 150));
  app1.kill('SIGTERM');
  await app1.exited;
  const t1 = tallyOf(app1);
  await waitFor('the first app at the collector', async () => {
    const sums = await collectorSums(first, series);
    return series.every((n) => (sums[n] ?? 0) >= (t1.acked[n] ?? 0));
  });
  await sc1.kill('SIGTERM');
  await waitFor('the agent disconnected', async () => {
    const agents = (await getJson<{ agentId: string; state: string }[]>(first.httpPort, '/api/agents', first.httpHost)).body;
    return agents.some((a) => a.agentId === `fstore-${c.name}` && a.state === 'disconnected');
  });
  await first.kill(c.stop);
  const damaged = c.damage(join(data, 'collector.db'));

  // The second sidecar and app wait for the collector (reconnect_schedule 200 ms), as in production:
  // the recovery measured is the collector's own, from its start to its first stored batch.
  const sc2 = await tcpSidecar(join(tmp.dir, `${c.name}-2`), first, key, `fstore-${c.name}`);
  cleanups.push(() => sc2.kill('SIGKILL'));
  const app2 = startLoadApp(sc2.socket, `${c.name}-2`, series);
  cleanups.push(() => app2.kill('SIGKILL'));
  await waitFor('the second app acked by its sidecar', () => tallyOf(app2).acked[series[0] as string] !== undefined);
  const restartAt = Date.now();
  const second = await start(first.port);
  cleanups.push(() => second.kill('SIGKILL'));
  collectorPid = second.pid;
  await waitFor('the restarted collector to store', async () => (await stats(second)).received.metricPoints > 0, 15000, 10);
  const recoverMs = Date.now() - restartAt;
  await sleep(byLevel(500, 2000));
  app2.kill('SIGTERM');
  await app2.exited;
  const tally = addTallies(t1, tallyOf(app2));
  await waitFor('the acked values at the collector', async () => {
    const sums = await collectorSums(second, series);
    return series.every((n) => (sums[n] ?? 0) >= (tally.acked[n] ?? 0));
  }).catch(() => null); // a shortfall is judged (and recorded) below
  await sleep(byLevel(600, 1500)); // a few metric intervals (200 ms): a late duplicate would show
  const v = judge(tally, await collectorSums(second, series));
  const end = await stats(second);
  const maxRssMb = rss.stop();
  recordFigures(FILE, {
    case: c.id,
    section: 'storage',
    load: `2 apps × ${series.length} counters every 20 ms, one before and one after the fault`,
    fault: c.fault,
    lost: v.lost,
    duplicated: v.duplicated,
    maxRssMb,
    recoverMs,
    extra: { ...damaged, storeFailed: end.rejected.storeFailed ?? 0, malformed: end.rejected.malformed ?? 0, storeErrors: end.storeErrors },
  });
  assert.equal(v.lost, 0, JSON.stringify(v.perSeries));
  assert.equal(v.duplicated, 0, JSON.stringify(v.perSeries));
  assert.equal(second.alive, true);
  assert.ok(recoverMs <= MAX_RECOVER_MS, `storing ${recoverMs} ms after the restart`);
  assert.equal(end.rejected.malformed, 0);
  assert.ok((maxRssMb.collector ?? 0) <= MAX_COLLECTOR_RSS_MB, `collector RSS ${maxRssMb.collector} MiB`);
  c.check?.(second);
}
