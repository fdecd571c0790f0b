import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type Proc, type SidecarProc, pointsOf, startApp, startSidecar, tempDir, waitFor } from '../helpers/procs';
import { FakeSidecar } from '../helpers/shim-fakes';

/**
 * Wait for a fixture to exit by itself. The deadline only turns "never exits"
 * into a failure instead of a hung suite; it is far above the expected time.
 */
async function exitOnItsOwn(p: Proc, ms = 25_000): Promise<number | null> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<'stuck'>((resolve) => {
    timer = setTimeout(() => resolve('stuck'), ms);
  });
  const r = await Promise.race([p.exited, deadline]);
  clearTimeout(timer);
  if (r === 'stuck') {
    await p.kill('SIGKILL');
    assert.fail(`the app did not exit by itself; stdout: ${p.raw.join('\n')} stderr: ${p.stderr}`);
  }
  return r;
}

function lineWith(p: Proc, key: string): Record<string, unknown> {
  const l = p.lines.find((x) => key in x);
  assert.ok(l, `no "${key}" line in ${JSON.stringify(p.raw)} (stderr: ${p.stderr})`);
  return l;
}

const tmp = tempDir('apm-shim-exit-');
after(() => tmp.cleanup());

describe('an app using the shim exits by itself', () => {
  let sidecar: SidecarProc;
  before(async () => {
    sidecar = await startSidecar(tmp.dir, ['--set', 'flush_ms=50', '--set', 'metric_interval_ms=200']);
  });
  after(async () => {
    await sidecar.kill('SIGTERM');
  });

  it('with the sidecar absent: records everything and exits with code 0', async () => {
    const app = startApp('shim-idle', { SOCKET: join(tmp.dir, 'absent.sock') });
    assert.equal(await exitOnItsOwn(app), 0, app.stderr);
    const line = lineWith(app, 'recorded');
    assert.ok(['connecting', 'disconnected'].includes(line.state as string), `state ${String(line.state)}`);
    assert.equal(app.stderr, '');
  });

  it('with the sidecar present (socket from APM_SIDECAR_SOCKET): connected, recorded, exits with code 0', async () => {
    const app = startApp('shim-idle', { APM_SIDECAR_SOCKET: sidecar.socket, WAIT_ACTIVE: '1' });
    assert.equal(await exitOnItsOwn(app), 0, app.stderr);
    assert.equal(lineWith(app, 'recorded').state, 'active');
    assert.equal(app.stderr, '');
    await sidecar.waitLine('the sidecar to see the app leave', (l) => l.msg === 'shim disconnected' && l.appPid === app.pid);
    assert.equal(sidecar.logs('shim connected').filter((l) => l.appPid === app.pid).length, 1);
    assert.ok(sidecar.alive);
  });

  it('with HTTP instrumentation on, after serving and making requests (http and fetch): exits with code 0', async () => {
    const app = startApp('shim-idle', { APM_SIDECAR_SOCKET: sidecar.socket, HTTP: '1' });
    assert.equal(await exitOnItsOwn(app), 0, app.stderr);
    assert.equal(app.stderr, '');
    await waitFor(
      'the traces of both requests',
      () => sidecar.packs('trace').filter((t) => (t.trace as { name: string }).name === 'GET /idle/:id').length === 2,
    );
  });

  it('process.exit() right after an await: what was recorded just before still reaches the sidecar', async () => {
    const app = startApp('shim-idle', { APM_SIDECAR_SOCKET: sidecar.socket, WAIT_ACTIVE: '1', EXIT_AFTER_AWAIT: '1', EVENTS: '3' });
    assert.equal(await exitOnItsOwn(app), 0, app.stderr);
    assert.equal(lineWith(app, 'recorded').state, 'active');
    await waitFor(
      'the three events of the app',
      () => sidecar.packs('event').filter((p) => (p.event as { attributes?: { pid?: number } }).attributes?.pid === app.pid).length === 3,
    );
  });

  it('with a hung sidecar that stopped reading: the stuck write is abandoned and the app exits with code 0', async () => {
    const fake = await FakeSidecar.start(join(tmp.dir, 'hung.sock'), (f) => {
      f.read = false;
    });
    try {
      // 3000 × 2 KB events: far more than the socket buffers hold, so writes stay pending.
      const app = startApp('shim-idle', { SOCKET: fake.path, WAIT_ACTIVE: '1', EVENTS: '3000' });
      assert.equal(await exitOnItsOwn(app), 0, app.stderr);
      assert.equal(lineWith(app, 'recorded').state, 'active');
      assert.equal(fake.shims.length >= 1, true);
    } finally {
      await fake.close();
    }
  });

  it('await flush() settles with true once the sidecar acked, and the code after it runs', async () => {
    const app = startApp('shim-await', { SOCKET: sidecar.socket, MODE: 'flush', WAIT_ACTIVE: '1' });
    assert.equal(await exitOnItsOwn(app), 0, app.stderr);
    assert.equal(lineWith(app, 'flushed').flushed, true);
  });

  it('await flush() with the sidecar absent settles with false after its timeout', async () => {
    const app = startApp('shim-await', { SOCKET: join(tmp.dir, 'absent.sock'), MODE: 'flush', TIMEOUT_MS: '200' });
    assert.equal(await exitOnItsOwn(app), 0, app.stderr);
    assert.equal(lineWith(app, 'flushed').flushed, false);
  });

  it('await close() settles, the code after it runs, and what was recorded reaches the sidecar', async () => {
    const app = startApp('shim-await', { SOCKET: sidecar.socket, MODE: 'close', WAIT_ACTIVE: '1', RUN: 'close-present' });
    assert.equal(await exitOnItsOwn(app), 0, app.stderr);
    assert.equal(lineWith(app, 'closed').closed, true);
    const count = () => pointsOf(sidecar, 'await.count').filter((pt) => (pt.tags as Record<string, string>).run === 'close-present');
    await waitFor('the count recorded before close() to arrive', () => count().length > 0);
    assert.equal(
      count().reduce((a, pt) => a + (pt.count as number), 0),
      1,
    );
    await sidecar.waitLine(
      'the registration sent before close()',
      (l) => l.pack === 'btRegistration' && l.pid === app.pid && l.name === 'GET /await/close-present',
    );
  });

  it('await close() with the sidecar absent settles at once', async () => {
    const app = startApp('shim-await', { SOCKET: join(tmp.dir, 'absent.sock'), MODE: 'close' });
    assert.equal(await exitOnItsOwn(app), 0, app.stderr);
    assert.equal(lineWith(app, 'closed').closed, true);
  });
});
