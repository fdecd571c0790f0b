/**
 * A full disk under the retention (DESIGN §3, §8), on a real filesystem: a 2 MiB
 * tmpfs in a private mount namespace (test/helpers/small-disk.ts), filled through
 * /proc/<holder>/root.
 */
import assert from 'node:assert/strict';
import { get } from 'node:http';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type ApmClient, connect } from '@apm-sidecar/shim';
import { cleanupsAfterEach } from '../helpers/cleanups';
import { createKey } from '../helpers/collector';
import { sidecarStatus } from '../helpers/outage';
import { type SidecarProc, pointsOf, sleep, tempDir, waitFor } from '../helpers/procs';
import { SmallDisk, mountAllowed } from '../helpers/small-disk';

type Json = Record<string, any>;

const tmp = tempDir('apm-diskfull-');
after(() => tmp.cleanup());

const cleanups = cleanupsAfterEach();

/** `apm-sidecar run` (debug transport) on `disk`, its data_dir `data` under the mount; resolves once it listens. */
async function sidecarOn(disk: SmallDisk, name: string, extra: string[], data = 'data', env: Record<string, string> = {}): Promise<SidecarProc> {
  const args = ['--transport', 'debug', '--data-dir', disk.path(data), '--set', 'agent_id=disk-full', ...extra];
  const p = await disk.sidecar(join(tmp.dir, `${name}.sock`), args, env);
  cleanups.push(() => p.kill('SIGKILL'));
  return p;
}

/** Fill `disk` until ENOSPC; the filler is removed after the test in any case. */
function fill(disk: SmallDisk): void {
  cleanups.push(() => disk.free());
  disk.fill();
}

const SPEED = ['--set', 'flush_ms=50', '--set', 'metric_interval_ms=300', '--set', 'retention_min_free_bytes=0', '--http', '127.0.0.1:0'];

function shim(sc: SidecarProc): ApmClient {
  // flushMs far away: every frame in these tests is one the test made with flush().
  const apm = connect({ socket: sc.socket, app: 'disk-full', flushMs: 3_600_000, reconnectMinMs: 20, reconnectMaxMs: 200 });
  cleanups.push(() => apm.close());
  return apm;
}

/** 50 distinct series of `value` each: one frame of a few KiB, written to the WAL in full. */
function record(apm: ApmClient, value: number): void {
  for (let i = 0; i < 50; i++) apm.counter('disk.full', { series: String(i) }).add(value);
}

/** The sum of every value recorded under disk.full that the sidecar printed (debug transport). */
function total(sc: SidecarProc): number {
  return pointsOf(sc, 'disk.full').reduce((a, pt) => a + (pt.sum as number), 0);
}

function httpText(port: number, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    get({ host: '127.0.0.1', port, path }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => {
        body += d.toString();
      });
      res.on('end', () => resolve(body));
    }).on('error', reject);
  });
}

function httpPort(sc: SidecarProc): number {
  return ((sc.lines.find((l) => l.msg === 'serving /healthz, /readyz and /metrics') as Json).http as { port: number }).port;
}

describe('the retention on a full disk', { skip: mountAllowed() ? false : 'mounting a tmpfs in a private mount namespace is not permitted here' }, () => {
  let disk: SmallDisk;
  before(async () => {
    disk = await SmallDisk.mount(join(tmp.dir, 'mnt'), '2m');
  });
  after(() => disk.close());

  test('a full disk is reported, not fatal: shims are not acked until a commit succeeds, then every value arrives exactly once', async () => {
    const sc = await sidecarOn(disk, 'full', SPEED);
    const apm = shim(sc);
    await waitFor('the welcome', () => apm.state === 'active');
    record(apm, 1);
    assert.equal(await apm.flush(), true, 'acked while there is room');

    fill(disk);
    record(apm, 10);
    assert.equal(await apm.flush(1500), false, 'not acked: the frame was not committed');
    const full = await waitFor('the condition in status', async () => {
      const s = await sidecarStatus(sc.socket);
      return s.retention.condition === 'failing' ? s : null;
    });
    assert.ok(full.counters.retentionRefused >= 1, 'refused frames are counted');
    assert.ok(full.counters.retentionErrors >= 1, 'failed commits are counted');
    assert.match(full.retention.lastError, /full/);
    const metrics = await httpText(httpPort(sc), '/metrics');
    assert.match(metrics, /apm_sidecar_retention_condition\{condition="failing"\} 1/);
    assert.match(metrics, /apm_sidecar_retention_refused_total [1-9]/);
    await sleep(2500); // several ticks, purges and space checks on the full disk
    assert.equal(sc.alive, true, `the sidecar is still up: ${sc.stderr}`);
    assert.ok(apm.stats().buffered >= 1, 'the shim keeps the unacked frame');
    assert.equal(sc.logs('retention writes are failing').length, 1, 'one log line when it starts');

    disk.free();
    await waitFor('the shim to be acked for everything', () => apm.stats().buffered === 0, 15000);
    await waitFor('the condition to end', async () => (await sidecarStatus(sc.socket)).retention.condition === 'ok');
    assert.equal(sc.logs('retention writes succeed again').length, 1, 'one log line when it ends');
    record(apm, 100);
    assert.equal(await apm.flush(), true);

    await sc.kill('SIGTERM');
    assert.equal(sc.exitCode, 0);
    assert.equal(total(sc), 50 * (1 + 10 + 100), 'every value once, nothing acked lost, nothing twice');
  });

  test('a sidecar started on a full disk runs without acking durable frames and opens the retention when space returns', async () => {
    fill(disk);
    const sc = await sidecarOn(disk, 'late', SPEED.concat(['--set', 'metric_interval_ms=60000']), 'late');
    const apm = shim(sc);
    await waitFor('the welcome', () => apm.state === 'active');
    record(apm, 3);
    assert.equal(await apm.flush(1000), false, 'not acked: there is no retention to commit to');
    const s = await sidecarStatus(sc.socket);
    assert.equal(s.retention.condition, 'unavailable');
    assert.equal(sc.logs('retention cannot be opened').length, 1);
    disk.free();
    await waitFor('the retention to open and the shim to be acked', () => apm.stats().buffered === 0, 15000);
    assert.equal((await sidecarStatus(sc.socket)).retention.condition, 'ok');
    await sc.kill('SIGTERM');
    assert.equal(total(sc), 50 * 3);
  });

  test('nothing acked is lost when the sidecar is killed while the disk is full: the shim resends what was not committed', async () => {
    const first = await sidecarOn(disk, 'killed', SPEED.concat(['--set', 'metric_interval_ms=60000']));
    const apm = shim(first);
    await waitFor('the welcome', () => apm.state === 'active');
    record(apm, 1);
    assert.equal(await apm.flush(), true);
    fill(disk);
    record(apm, 10);
    assert.equal(await apm.flush(1000), false);
    record(apm, 100);
    assert.equal(await apm.flush(500), false);
    await first.kill('SIGKILL');
    disk.free();

    const second = await sidecarOn(disk, 'killed', SPEED.concat(['--set', 'metric_interval_ms=60000']));
    await waitFor('the shim to be acked for everything', () => apm.stats().buffered === 0, 15000);
    await second.kill('SIGTERM');
    assert.equal(total(first), 0, 'the first sidecar emitted nothing (its interval was open)');
    assert.equal(total(second), 50 * (1 + 10 + 100), 'the retained frame replayed, the unacked ones resent: each value once');
  });

  test('free space below retention_min_free_bytes: the oldest retained metrics are dropped (disk_full, not expired) and the disk never fills', async () => {
    const small = await SmallDisk.mount(join(tmp.dir, 'mnt-minfree'), '2m');
    cleanups.push(() => small.close());
    const key = await createKey(join(tmp.dir, 'keys'));
    // A port nothing listens on: the collector is away, closed intervals stay in the retention.
    const dead = createServer().listen(0, '127.0.0.1');
    await new Promise((r) => dead.once('listening', r));
    const port = (dead.address() as { port: number }).port;
    await new Promise((r) => dead.close(r));
    const sets = {
      flush_ms: 50,
      metric_interval_ms: 100,
      tcp_connection_timeout: 300,
      reconnect_schedule: '1000x200',
      retention_ms: 600000,
      retention_min_free_bytes: 1_400_000,
    };
    const sc = await sidecarOn(
      small,
      'minfree',
      ['--transport', 'tcp', '--server-host', '127.0.0.1', '--server-port', String(port), ...Object.entries(sets).flatMap(([k, v]) => ['--set', `${k}=${v}`])],
      'data',
      { APM_SIDECAR_ACCESS_KEY: key },
    );
    const apm = shim(sc);
    await waitFor('the welcome', () => apm.state !== 'connecting' && apm.state !== 'disconnected');
    for (let r = 1; r <= 30; r++) {
      await sleep(100 - (Date.now() % 100) + 20);
      for (let i = 0; i < 600; i++) apm.counter('min.free', { series: `s${i}` }).add(r);
      assert.equal(await apm.flush(), true, `round ${r} committed and acked: the disk never filled`);
    }
    const s = await waitFor('the oldest packs to be dropped for space', async () => {
      const x = await sidecarStatus(sc.socket);
      return (x.counters.dropped.disk_full ?? 0) > 0 ? x : null;
    });
    assert.equal(s.counters.dropped.expired ?? 0, 0);
    assert.equal(s.counters.dropped.disk_full % 600, 0, 'whole intervals');
    assert.equal(s.counters.retentionErrors, 0, 'no commit ever failed');
    assert.equal(sc.logs(/beyond its space bounds \(min_free\)/).length, 1, 'one log line when dropping starts');
    await waitFor('free space back above the bound', async () => (await sidecarStatus(sc.socket)).retention.freeBytes >= 1_400_000, 30_000);
    assert.equal(sc.alive, true);
  });
});
