import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { FIXTURES, Proc, ROOT, SIDECAR_CLI, runCli, sleep, startSidecar, tempDir, waitFor } from '../helpers/procs';

// Permission tests: the machine runs them as root; the side under test runs as nobody.
const NOBODY = 65534;
const OTHER_UID = 1; // a non-root user that is not nobody (daemon)

/** `apm-sidecar run` as nobody, with XDG_RUNTIME_DIR unset and TMPDIR = `tmp`: the socket goes to <tmp>/apm-sidecar-65534/. */
function sidecarAsNobody(tmp: string, dataDir: string): Proc {
  const args = ['-u', 'nobody', '--', 'env', '-u', 'XDG_RUNTIME_DIR', '-u', 'APM_SIDECAR_SOCKET', `TMPDIR=${tmp}`, process.execPath, SIDECAR_CLI, 'run'];
  args.push('--transport', 'debug', '--data-dir', dataDir, '--set', 'agent_id=owner-test');
  return new Proc(spawn('runuser', args, { stdio: ['ignore', 'pipe', 'pipe'] }));
}

/** A directory nobody can use: created here (root) and handed over. */
function nobodysDir(path: string): string {
  mkdirSync(path, { recursive: true });
  chownSync(path, NOBODY, NOBODY);
  return path;
}

describe('the socket directory and socket owner (run as an unprivileged user)', () => {
  const tmp = tempDir();
  chmodSync(tmp.dir, 0o755);
  after(() => tmp.cleanup());

  test('refuses a tmp fallback directory pre-created 0777 by another user (root): ERR_SOCKET_DIR_OWNER, exit 1', async () => {
    const base = join(tmp.dir, 'a');
    mkdirSync(base, { mode: 0o755 });
    const dir = join(base, `apm-sidecar-${NOBODY}`);
    mkdirSync(dir);
    chmodSync(dir, 0o777);
    const sc = sidecarAsNobody(base, nobodysDir(join(base, 'data')));
    try {
      const code = await Promise.race([sc.exited, sleep(8000).then(() => 'still running')]);
      assert.equal(code, 1, `exit code (stderr: ${sc.stderr})`);
      assert.match(sc.stderr, /ERR_SOCKET_DIR_OWNER/);
      assert.match(sc.stderr, /owned by uid 0/);
      assert.equal(existsSync(join(dir, 'apm.sock')), false, 'no socket was created there');
      assert.equal(statSync(dir).mode & 0o7777, 0o777, 'the other user’s directory is left alone');
    } finally {
      await sc.kill('SIGKILL');
    }
  });

  test('tightens its own tmp fallback directory pre-created 0777 to 0700, and logs it', async () => {
    const base = join(tmp.dir, 'b');
    mkdirSync(base, { mode: 0o755 });
    const dir = nobodysDir(join(base, `apm-sidecar-${NOBODY}`));
    chmodSync(dir, 0o777);
    const sc = sidecarAsNobody(base, nobodysDir(join(base, 'data')));
    try {
      await waitFor('the sidecar to listen', () => {
        if (!sc.alive) throw new Error(`exited ${sc.exitCode}: ${sc.stderr}`);
        return sc.logs('listening for shims').length > 0;
      });
      assert.equal(statSync(dir).mode & 0o7777, 0o700);
      const log = sc.logs('tightened socket directory');
      assert.equal(log.length, 1);
      assert.match(String(log[0]?.msg), /from 0777 to 0700/);
      const st = lstatSync(join(dir, 'apm.sock'));
      assert.equal(st.isSocket(), true);
      assert.equal(st.uid, NOBODY);
      assert.equal(st.mode & 0o777, 0o600);
    } finally {
      await sc.kill('SIGTERM');
    }
  });

  test('refuses a socket directory that is a symlink, or a shared sticky directory (ERR_SOCKET_DIR_UNSAFE), and leaves a narrower one of its own as it is', async () => {
    const run = (socket: string, extra: string[] = []) =>
      new Proc(
        spawn(
          process.execPath,
          [SIDECAR_CLI, 'run', '--transport', 'debug', '--socket', socket, '--data-dir', `${socket}.data`, '--set', 'agent_id=x', ...extra],
          {
            stdio: ['ignore', 'pipe', 'pipe'],
          },
        ),
      );
    const real = join(tmp.dir, 'real');
    mkdirSync(real, { mode: 0o700 });
    symlinkSync(real, join(tmp.dir, 'link'));
    const viaLink = run(join(tmp.dir, 'link', 'apm.sock'));
    assert.equal(await viaLink.exited, 1);
    assert.match(viaLink.stderr, /symbolic link.*\[ERR_SOCKET_DIR_UNSAFE\]/);

    const shared = join(tmp.dir, 'shared');
    mkdirSync(shared);
    chmodSync(shared, 0o1777);
    const inShared = run(join(shared, 'apm.sock'));
    assert.equal(await inShared.exited, 1);
    assert.match(inShared.stderr, /shared \(sticky\).*\[ERR_SOCKET_DIR_UNSAFE\]/);
    assert.equal(statSync(shared).mode & 0o7777, 0o1777, 'a shared directory is never chmod-ed');

    // Like systemd's RuntimeDirectoryMode=0750 with socket_group: narrower than 0770, kept.
    const narrow = join(tmp.dir, 'narrow');
    mkdirSync(narrow);
    chmodSync(narrow, 0o750);
    const sc = run(join(narrow, 'apm.sock'), ['--set', `socket_group=${process.getgid?.() ?? 0}`]);
    try {
      await waitFor('the sidecar to listen', () => {
        if (!sc.alive) throw new Error(`exited ${sc.exitCode}: ${sc.stderr}`);
        return sc.logs('listening for shims').length > 0;
      });
      assert.equal(statSync(narrow).mode & 0o7777, 0o750);
      assert.equal(sc.logs('tightened').length, 0);
      assert.equal(lstatSync(join(narrow, 'apm.sock')).mode & 0o777, 0o660);
    } finally {
      await sc.kill('SIGTERM');
    }
  });

  test('under umask 000 the socket is never seen with a mode wider than 0600 during start-up', async (t) => {
    const witness = join(ROOT, 'test', 'dist', 'helpers', 'mode-witness.js');
    const seen = new Map<number, number>();
    const instants: { at: string; mode: number }[] = [];
    for (let round = 0; round < 3; round++) {
      const dir = join(tmp.dir, `umask-${round}`);
      const socket = join(dir, 'apm.sock');
      const stopFlag = join(tmp.dir, `umask-${round}.stop`);
      // A separate process polls the path as fast as it can and reports every mode it saw.
      const poller = new Proc(
        spawn(
          process.execPath,
          [
            '-e',
            `const fs = require('fs'); const seen = {}; let n = 0;
             for (;;) {
               try { const m = fs.lstatSync(${JSON.stringify(socket)}).mode & 0o7777; seen[m] = (seen[m] || 0) + 1; } catch {}
               if (++n % 2000 === 0 && fs.existsSync(${JSON.stringify(stopFlag)})) break;
             }
             console.log(JSON.stringify({ seen }));`,
          ],
          { stdio: ['ignore', 'pipe', 'pipe'] },
        ),
      );
      await sleep(100);
      const witnessOut = join(tmp.dir, `umask-${round}.witness`);
      const cmd = `umask 000; MODE_WITNESS_PATH=${JSON.stringify(socket)} MODE_WITNESS_OUT=${JSON.stringify(witnessOut)} exec ${JSON.stringify(process.execPath)} --require ${JSON.stringify(witness)} ${JSON.stringify(SIDECAR_CLI)} run --transport debug --socket ${JSON.stringify(socket)} --data-dir ${JSON.stringify(`${dir}.data`)} --set agent_id=umask`;
      const sc = new Proc(spawn('sh', ['-c', cmd], { stdio: ['ignore', 'pipe', 'pipe'] }));
      try {
        await waitFor('the sidecar to listen', () => {
          if (!sc.alive) throw new Error(`exited ${sc.exitCode}: ${sc.stderr}`);
          return sc.logs('listening for shims').length > 0;
        });
        await sleep(100);
      } finally {
        writeFileSync(stopFlag, '');
        await sc.kill('SIGTERM');
      }
      const report = await poller.waitLine('the poller report', (l) => l.seen !== undefined);
      for (const [mode, n] of Object.entries(report.seen as Record<string, number>)) seen.set(Number(mode), (seen.get(Number(mode)) ?? 0) + n);
      assert.equal(statSync(dir).mode & 0o7777, 0o700, 'the directory too');
      for (const line of readFileSync(witnessOut, 'utf8').trim().split('\n')) instants.push(JSON.parse(line));
    }
    t.diagnostic(`modes at bind and before each chmod/chown: ${instants.map((i) => `${i.at} 0${i.mode.toString(8)}`).join('; ')}`);
    assert.ok(
      instants.some((i) => i.at === 'after listen()'),
      'the mode right after bind was seen',
    );
    assert.deepEqual(
      instants.filter((i) => (i.mode & ~0o600) !== 0),
      [],
      'never wider than 0600, not even between bind and chmod',
    );
    t.diagnostic(`modes seen while polling: ${[...seen].map(([m, n]) => `0${m.toString(8)} x${n}`).join(', ')}`);
    assert.ok((seen.get(0o600) ?? 0) > 0, 'the poller saw the socket');
    assert.deepEqual(
      [...seen.keys()].filter((m) => (m & ~0o600) !== 0).map((m) => `0${m.toString(8)}`),
      [],
      'never wider than 0600',
    );
  });

  test('a shim run as nobody does not connect to a socket owned by another non-root uid, unless APM_SIDECAR_SOCKET_OWNER names it', async () => {
    const dir = join(tmp.dir, 'planted');
    const sc = await startSidecar(dir);
    try {
      // Emulate a socket another user (uid 1) put in place, reachable by nobody.
      chmodSync(dir, 0o711);
      chmodSync(sc.socket, 0o666);
      chownSync(sc.socket, OTHER_UID, OTHER_UID);
      const connections = async () => JSON.parse((await runCli(['status', '--json', '--socket', sc.socket])).stdout).counters.connections as number;
      const before = await connections();

      const probe = (env: string[]) =>
        new Proc(
          spawn('runuser', ['-u', 'nobody', '--', 'env', ...env, `SOCKET=${sc.socket}`, 'RUN_MS=1500', process.execPath, join(FIXTURES, 'owner-probe.js')], {
            stdio: ['ignore', 'pipe', 'pipe'],
          }),
        );
      const refused = probe(['-u', 'APM_SIDECAR_SOCKET_OWNER']);
      const final = await refused.waitLine('the refusing app to report', (l) => l.final === true, 10000);
      assert.equal(final.state, 'disconnected');
      assert.ok((final.stats as { buffered: number }).buffered >= 1, 'it keeps buffering as when the sidecar is away');
      const causes = refused.lines.filter((l) => l.stateChange !== undefined).map((l) => String((l.stateChange as { cause: unknown }).cause));
      assert.match(causes.join('\n'), /ERR_SOCKET_OWNER: .* is owned by uid 1/, 'a clear diagnostic on the state channel');
      assert.equal((final.lastConnectError as { code: string } | null)?.code, 'ERR_SOCKET_OWNER', 'and on the client');
      assert.equal(await refused.exited, 0);
      assert.equal((await connections()) - before, 1, 'the shim never connected (only the status request did)');

      const allowed = probe([`APM_SIDECAR_SOCKET_OWNER=${OTHER_UID}`]);
      const ok = await allowed.waitLine('the allowed app to report', (l) => l.final === true, 10000);
      assert.equal(ok.state, 'active', `allowed by APM_SIDECAR_SOCKET_OWNER (${allowed.stderr})`);
      assert.ok((ok.stats as { acked: number }).acked >= 1);
      assert.equal(ok.lastConnectError, null);
      assert.equal(await allowed.exited, 0);
    } finally {
      await sc.kill('SIGTERM');
    }
  });
});
