/**
 * A mistaken second `apm-sidecar run` (DESIGN §8): on a live socket, or on a
 * data_dir another sidecar holds, it exits 1 at once naming the other's pid,
 * having touched nothing of the first one's retention. A lock left by a
 * sidecar killed with -9 never stands in the way of a restart.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { type ApmClient, connect } from '@apm-sidecar/shim';
import { cleanupsAfterEach } from '../helpers/cleanups';
import { sidecarStatus } from '../helpers/outage';
import { Proc, SIDECAR_CLI, type SidecarProc, pointsOf, sleep, startSidecar, tempDir, waitFor } from '../helpers/procs';

const tmp = tempDir('apm-second-');
after(() => tmp.cleanup());

const cleanups = cleanupsAfterEach();

// Intervals stay open for the whole test: the retention holds raw frames, the kind a second start used to seal.
// retention_ms is longer than the interval, or an interval that began more than retention_ms ago
// (a 10-minute interval is, for 7 minutes of every 10) has its frames purged as expired at the first upkeep.
const OPEN = ['--set', 'flush_ms=50', '--set', 'metric_interval_ms=600000', '--set', 'retention_ms=3600000'];

async function first(name: string): Promise<{ sc: SidecarProc; data: string; apm: ApmClient }> {
  const dir = join(tmp.dir, name);
  const data = `${dir}.data`;
  const sc = await startSidecar(dir, OPEN);
  cleanups.push(() => sc.kill('SIGKILL'));
  const apm = connect({ socket: sc.socket, app: 'second-start', flushMs: 3_600_000, reconnectMinMs: 20, reconnectMaxMs: 200 });
  cleanups.push(() => apm.close());
  await waitFor('the welcome', () => apm.state === 'active');
  // 400 values in four committed frames.
  for (let f = 0; f < 4; f++) {
    for (let i = 0; i < 100; i++) apm.counter('second.start').add(1);
    assert.equal(await apm.flush(), true);
  }
  return { sc, data, apm };
}

/**
 * Every file of the data_dir: size, mtime and bytes. Not the WAL index (`-shm`): it is shared
 * memory that any reader, the first sidecar answering a status request included, writes to.
 */
function snapshot(data: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of readdirSync(data).sort()) {
    if (name.endsWith('-shm')) continue;
    const p = join(data, name);
    const st = statSync(p);
    out[name] = `${st.size}:${st.mtimeMs}:${readFileSync(p).toString('base64')}`;
  }
  return out;
}

/**
 * The data_dir once the first sidecar has finished its own writes: its once-a-second upkeep
 * may still write to the WAL right after the frames were committed, which is the first
 * sidecar's business. Unchanged for 1.5 s (more than one upkeep) counts as settled.
 */
async function settled(data: string): Promise<Record<string, string>> {
  let last = snapshot(data);
  let since = Date.now();
  const deadline = Date.now() + 15_000;
  while (Date.now() - since < 1500) {
    if (Date.now() > deadline) throw new Error('the first sidecar kept writing to its data_dir');
    await sleep(100);
    const now = snapshot(data);
    if (JSON.stringify(now) !== JSON.stringify(last)) {
      last = now;
      since = Date.now();
    }
  }
  return last;
}

function run(args: string[]): Proc {
  return new Proc(
    spawn(process.execPath, [SIDECAR_CLI, 'run', '--transport', 'debug', '--set', 'agent_id=second', ...OPEN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] }),
  );
}

/** The exit code, or null when it had to be killed because it was still running after `ms`. */
async function exitCode(p: Proc, ms = 5000): Promise<number | null> {
  const t = setTimeout(() => p.child.kill('SIGKILL'), ms);
  const code = await p.exited;
  clearTimeout(t);
  return code;
}

async function openFrames(sc: SidecarProc): Promise<[number, number]> {
  const s = await sidecarStatus(sc.socket);
  return [s.retention.frames, s.retention.packs];
}

function sumOf(p: Proc): number {
  return pointsOf(p, 'second.start').reduce((a, pt) => a + (pt.sum as number), 0);
}

/** kill -9 the first sidecar, restart on its data_dir and socket, SIGTERM it: what it emits is what the retention held. */
async function restartAndDrain(dir: string, data: string, sc: SidecarProc): Promise<number> {
  await sc.kill('SIGKILL');
  const again = await startSidecar(dir, [...OPEN, '--data-dir', data]);
  cleanups.push(() => again.kill('SIGKILL'));
  await again.kill('SIGTERM');
  assert.equal(again.exitCode, 0);
  return sumOf(again);
}

describe('a second sidecar', () => {
  test('on a live socket with the same data_dir: exits 1 at once naming the first one’s pid, and touches nothing', async () => {
    const { sc, data } = await first('live');
    assert.deepEqual(await openFrames(sc), [4, 0]);
    const before = await settled(data);

    const t0 = Date.now();
    const second = run(['--socket', sc.socket, '--data-dir', data]);
    assert.equal(await exitCode(second), 1);
    const took = Date.now() - t0;
    assert.match(second.stderr, new RegExp(`already listening on .*\\(pid ${sc.pid}\\)`));
    assert.ok(took < 4000, `exits at once, not after a shutdown deadline (${took} ms)`);
    assert.equal(second.packs().length, 0, 'the second one emitted nothing');
    assert.deepEqual(snapshot(data), before, 'retention.db, its WAL and the lock are byte for byte as they were');
    assert.deepEqual(await openFrames(sc), [4, 0], 'the first one’s open frames are still raw frames');
    assert.equal(sc.alive, true);

    assert.equal(await restartAndDrain(join(tmp.dir, 'live'), data, sc), 400, 'after a restart the collector gets exactly what was recorded');
  });

  test('on another socket with the same data_dir: exits 1 at once naming the first one’s pid, and touches nothing', async () => {
    const { sc, data } = await first('shared');
    const before = await settled(data);
    const second = run(['--socket', join(tmp.dir, 'other.sock'), '--data-dir', data]);
    assert.equal(await exitCode(second), 1);
    assert.match(second.stderr, new RegExp(`data_dir .* is in use by another sidecar \\(pid ${sc.pid}\\).*\\[ERR_DATA_DIR_LOCKED\\]`));
    assert.equal(second.packs().length, 0);
    assert.deepEqual(snapshot(data), before);
    assert.deepEqual(await openFrames(sc), [4, 0]);
    assert.equal(sc.alive, true);

    assert.equal(await restartAndDrain(join(tmp.dir, 'shared'), data, sc), 400);
  });

  test('a lock left by a sidecar killed with -9 does not stand in the way: the restart takes it and replays the retention', async () => {
    const { sc, data } = await first('stale');
    await sc.kill('SIGKILL');
    assert.equal(readFileSync(join(data, 'sidecar.pid'), 'utf8').trim(), String(sc.pid), 'the dead one’s pid note is left behind');
    const again = await startSidecar(join(tmp.dir, 'stale'), [...OPEN, '--data-dir', data]);
    cleanups.push(() => again.kill('SIGKILL'));
    assert.equal(readFileSync(join(data, 'sidecar.pid'), 'utf8').trim(), String(again.pid));
    // And it holds the lock now: a third one is refused, naming it.
    const third = run(['--socket', join(tmp.dir, 'third.sock'), '--data-dir', data]);
    assert.equal(await exitCode(third), 1);
    assert.match(third.stderr, new RegExp(`\\(pid ${again.pid}\\)`));
    await again.kill('SIGTERM');
    assert.equal(sumOf(again), 400);
  });
});
