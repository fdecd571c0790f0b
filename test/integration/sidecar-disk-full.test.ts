/**
 * A full disk under the retention (DESIGN §3, §8), on a real filesystem: a 2 MiB
 * tmpfs mounted in a private mount namespace that only the test's processes
 * enter (`unshare -m`, then `nsenter` for each sidecar), so nothing leaks to the
 * machine: the mount goes away with the namespace's last process, and its
 * holder exits when the test's end of its stdin closes, even if the test dies.
 * The test fills the filesystem through /proc/<holder>/root.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, rmSync, unlinkSync, writeSync } from 'node:fs';
import { get } from 'node:http';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type ApmClient, connect } from '@apm-sidecar/shim';
import { cleanupsAfterEach } from '../helpers/cleanups';
import { createKey } from '../helpers/collector';
import { sidecarStatus } from '../helpers/outage';
import { Proc, SIDECAR_CLI, type SidecarProc, pointsOf, sidecarListening, sleep, tempDir, waitFor } from '../helpers/procs';

type Json = Record<string, any>;

const tmp = tempDir('apm-diskfull-');
after(() => tmp.cleanup());

const cleanups = cleanupsAfterEach();

/** A private mount namespace holding a small tmpfs at `mnt`; alive while the test holds its stdin. */
class SmallDisk {
  private constructor(
    readonly holder: Proc,
    readonly mnt: string,
  ) {}

  static async mount(mnt: string, size = '2m'): Promise<SmallDisk> {
    mkdirSync(mnt, { recursive: true });
    const child = spawn(
      'unshare',
      [
        '-m',
        '--propagation',
        'private',
        'sh',
        '-c',
        'mount -t tmpfs -o "size=$1" tmpfs "$2" && echo \'{"mounted":true}\' && exec cat >/dev/null',
        'sh',
        size,
        mnt,
      ],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    const holder = new Proc(child);
    await waitFor('the tmpfs to be mounted', () => {
      if (!holder.alive) throw new Error(`unshare/mount failed: ${holder.stderr}`);
      return holder.lines.some((l) => l.mounted === true);
    });
    return new SmallDisk(holder, mnt);
  }

  /** `mnt` as the namespace sees it, from outside. */
  inside(name: string): string {
    return join(`/proc/${this.holder.pid}/root`, this.mnt, name);
  }

  /** Fill the filesystem until ENOSPC (the filler is removed after the test in any case). */
  fill(): number {
    cleanups.push(() => rmSync(this.inside('filler'), { force: true }));
    const fd = openSync(this.inside('filler'), 'w');
    const chunk = Buffer.alloc(4096, 1);
    let n = 0;
    try {
      for (;;) n += writeSync(fd, chunk);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
    } finally {
      closeSync(fd);
    }
    return n;
  }

  free(): void {
    unlinkSync(this.inside('filler'));
  }

  /** Start `apm-sidecar run` inside the namespace; resolves once it listens. */
  async sidecar(name: string, extra: string[], data = 'data', env: Record<string, string> = {}): Promise<SidecarProc> {
    const socket = join(tmp.dir, `${name}.sock`);
    const args = ['-t', String(this.holder.pid), '-m', '--', process.execPath, SIDECAR_CLI, 'run', '--transport', 'debug', '--socket', socket];
    const p = new Proc(
      spawn('nsenter', [...args, '--data-dir', join(this.mnt, data), '--set', 'agent_id=disk-full', ...extra], {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, ...env },
      }),
    ) as SidecarProc;
    p.socket = socket;
    cleanups.push(() => p.kill('SIGKILL'));
    await sidecarListening(p);
    return p;
  }

  async close(): Promise<void> {
    this.holder.child.stdin?.end();
    await this.holder.exited;
  }
}

function mountAllowed(): boolean {
  const r = spawnSync('unshare', ['-m', 'sh', '-c', 'mount -t tmpfs -o size=64k tmpfs /mnt'], { encoding: 'utf8' });
  return r.status === 0;
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
    disk = await SmallDisk.mount(join(tmp.dir, 'mnt'));
  });
  after(() => disk.close());

  test('a full disk is reported, not fatal: shims are not acked until a commit succeeds, then every value arrives exactly once', async () => {
    const sc = await disk.sidecar('full', SPEED);
    const apm = shim(sc);
    await waitFor('the welcome', () => apm.state === 'active');
    record(apm, 1);
    assert.equal(await apm.flush(), true, 'acked while there is room');

    disk.fill();
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
    disk.fill();
    const sc = await disk.sidecar('late', SPEED.concat(['--set', 'metric_interval_ms=60000']), 'late');
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
    const first = await disk.sidecar('killed', SPEED.concat(['--set', 'metric_interval_ms=60000']));
    const apm = shim(first);
    await waitFor('the welcome', () => apm.state === 'active');
    record(apm, 1);
    assert.equal(await apm.flush(), true);
    disk.fill();
    record(apm, 10);
    assert.equal(await apm.flush(1000), false);
    record(apm, 100);
    assert.equal(await apm.flush(500), false);
    await first.kill('SIGKILL');
    disk.free();

    const second = await disk.sidecar('killed', SPEED.concat(['--set', 'metric_interval_ms=60000']));
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
    const sc = await small.sidecar(
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
