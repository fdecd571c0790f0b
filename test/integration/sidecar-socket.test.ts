import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { lstatSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { SIDECAR_CLI, Proc, startSidecar, tempDir, waitFor } from '../helpers/procs';

// Every run names its own data directory beside the socket: without one the
// sidecar would fall back to /var/lib/apm-sidecar, outside the test's sandbox.
function runSidecar(socket: string, extra: string[] = []): Proc {
  const args = [SIDECAR_CLI, 'run', '--transport', 'debug', '--socket', socket, '--data-dir', `${socket}.data`, ...extra];
  return new Proc(spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] }));
}

describe('the IPC socket', () => {
  const tmp = tempDir();
  after(() => tmp.cleanup());

  test('creates its directory 0700 and the socket 0600', async () => {
    const dir = join(tmp.dir, 'private');
    const sc = await startSidecar(dir);
    try {
      assert.equal(statSync(dir).mode & 0o777, 0o700);
      const st = lstatSync(sc.socket);
      assert.equal(st.isSocket(), true);
      assert.equal(st.mode & 0o777, 0o600);
    } finally {
      await sc.kill('SIGTERM');
    }
  });

  test('with socket_group: directory 0770 and socket 0660 owned by that group', async () => {
    const dir = join(tmp.dir, 'grouped');
    const gid = process.getgid?.() ?? 0;
    const sc = await startSidecar(dir, ['--set', `socket_group=${gid}`]);
    try {
      assert.equal(statSync(dir).mode & 0o777, 0o770);
      const st = lstatSync(sc.socket);
      assert.equal(st.mode & 0o777, 0o660);
      assert.equal(st.gid, gid);
    } finally {
      await sc.kill('SIGTERM');
    }
  });

  test('replaces a stale socket file that nothing listens on', async () => {
    const dir = join(tmp.dir, 'stale');
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const socket = join(dir, 'apm.sock');
    // Leave a real socket file behind: listen, then kill the listener without unlinking.
    const holder = new Proc(
      spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(socket)}, () => console.log('{"up":true}'))`], {
        stdio: ['ignore', 'pipe', 'pipe'],
      }),
    );
    await holder.waitLine('the holder to listen', (l) => l.up === true);
    await holder.kill('SIGKILL');
    assert.equal(lstatSync(socket).isSocket(), true, 'a stale socket file is left behind');

    const sc = await startSidecar(dir);
    try {
      assert.equal(sc.logs('replaced a stale socket file').length, 1);
    } finally {
      await sc.kill('SIGTERM');
    }
  });

  test('refuses to start when another sidecar is listening, with a clear message and exit code 1', async () => {
    const dir = join(tmp.dir, 'live');
    const first = await startSidecar(dir);
    try {
      const second = runSidecar(first.socket);
      const code = await second.exited;
      assert.equal(code, 1);
      assert.match(second.stderr, /another sidecar is already listening on .*apm\.sock/);
      assert.equal(first.alive, true, 'the first sidecar is unaffected');
    } finally {
      await first.kill('SIGTERM');
    }
  });

  test('refuses to replace a path that is not a socket', async () => {
    const dir = join(tmp.dir, 'notsock');
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const path = join(dir, 'apm.sock');
    writeFileSync(path, 'precious');
    const p = runSidecar(path);
    assert.equal(await p.exited, 1);
    assert.match(p.stderr, /exists and is not a socket/);
    assert.equal(statSync(path).isFile(), true);
  });

  test('a plain unix server on the path counts as live too (never steals a socket in use)', async () => {
    const dir = join(tmp.dir, 'foreign');
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const path = join(dir, 'apm.sock');
    const srv = createServer((s) => s.end());
    await new Promise<void>((r) => srv.listen(path, r));
    try {
      const p = runSidecar(path);
      assert.equal(await p.exited, 1);
      await waitFor('stderr', () => /already listening/.test(p.stderr));
    } finally {
      srv.close();
    }
  });
});
