import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { type Server, createServer as createHttpServer } from 'node:http';
import { type Server as NetServer, createServer } from 'node:net';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { encodeFrame } from '@apm-sidecar/proto';
import { formatAccessKey } from '@apm-sidecar/proto/upstream';
import { cleanupsAfterEach } from '../helpers/cleanups';
import { runCli, startSidecar, statusJson, tempDir, waitFor } from '../helpers/procs';

// What `apm-sidecar status` and `apm-sidecar config` tell a user who got something wrong.

const KEY = formatAccessKey({ projectId: 'diag', secret: randomBytes(32) });
const tmp = tempDir('apm-diag-');
after(() => tmp.cleanup());
const cleanups = cleanupsAfterEach();
let n = 0;

function listen(s: Server | NetServer): Promise<number> {
  return new Promise((resolve) => s.listen(0, '127.0.0.1', () => resolve((s.address() as { port: number }).port)));
}

/** A sidecar over `transport` (tcp) to 127.0.0.1:port, retrying every `retryMs`. */
async function sidecarTo(port: number, retryMs = 60000, transport = 'tcp') {
  const sc = await startSidecar(
    join(tmp.dir, `s${++n}`),
    [
      '--transport',
      transport,
      '--server-host',
      '127.0.0.1',
      '--server-port',
      String(port),
      '--set',
      `reconnect_schedule=${retryMs}`,
      '--set',
      'tcp_connection_timeout=1000',
    ],
    { APM_SIDECAR_ACCESS_KEY: KEY },
  );
  cleanups.push(() => sc.kill('SIGTERM'));
  return sc;
}

describe('apm-sidecar diagnostics', () => {
  test('an HTTP server on the upstream port is reported as "is this the HTTP port?", not as a huge frame', async () => {
    const web = createHttpServer((_req, res) => res.end('hello'));
    cleanups.push(() => web.close());
    const port = await listen(web);
    const sc = await sidecarTo(port);
    const s = await waitFor('the first failed attempt', async () => {
      const st = await statusJson(sc.socket);
      return st.upstream.lastError ? st : null;
    });
    assert.equal(s.upstream.lastError.code, 'ERR_NOT_APM_PEER');
    assert.match(s.upstream.lastError.message, /does not speak the apm-sidecar protocol — is this the HTTP port\? It answered "HTTP\/1\.1 400/);
    assert.equal(s.upstream.sessionErrors.ERR_NOT_APM_PEER, 1, 'counted by code');
    assert.doesNotMatch(sc.raw.join('\n'), /1347703880|frame declares/);
    assert.equal(sc.logs('does not speak the apm-sidecar protocol').length, 1, 'logged once for the one attempt');
  });

  test('a peer that sends some other text (a banner) is reported as the wrong port too', async () => {
    const banner = createServer((sock) => sock.end('SSH-2.0-OpenSSH_9.2\r\n'));
    cleanups.push(() => banner.close());
    const sc = await sidecarTo(await listen(banner));
    const s = await waitFor('the first failed attempt', async () => {
      const st = await statusJson(sc.socket);
      return st.upstream.lastError ? st : null;
    });
    assert.equal(s.upstream.lastError.code, 'ERR_NOT_APM_PEER');
    assert.match(s.upstream.lastError.message, /is this the right port\? It sent "SSH-2\.0-OpenSSH_9\.2"/);
  });

  test('transport http to a port that answers frames, not HTTP, is reported as "is this the agent (TCP) port?"', async () => {
    const framed = createServer((sock) => {
      sock.once('data', () => sock.end(encodeFrame(0x7f, Buffer.from('not http at all'))));
      sock.on('error', () => undefined);
    });
    cleanups.push(() => framed.close());
    const sc = await sidecarTo(await listen(framed), 60000, 'http');
    const s = await waitFor('the first failed attempt', async () => {
      const st = await statusJson(sc.socket);
      return st.upstream.lastError ? st : null;
    });
    assert.equal(s.upstream.lastError.code, 'ERR_NOT_HTTP_PEER');
    assert.match(s.upstream.lastError.message, /does not answer HTTP — is this the agent \(TCP\) port\?/);
  });

  test('status (text) shows the last upstream error and when the next attempt is', async () => {
    const closed = createServer();
    const port = await listen(closed);
    await new Promise((r) => closed.close(r));
    const sc = await sidecarTo(port, 45000);
    await waitFor('the first failed attempt', async () => (await statusJson(sc.socket)).upstream.nextAttemptAt);
    const r = await runCli(['status', '--socket', sc.socket]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`upstream:   not connected \\(127\\.0\\.0\\.1:${port}\\)`));
    assert.match(r.stdout, /last error: .*ECONNREFUSED.* \[ECONNREFUSED\] at \d{4}-\d\d-\d\dT/);
    const next = /next try: {3}in (\d+) s \((\S+)\)/.exec(r.stdout);
    assert.ok(next, r.stdout);
    assert.ok(Number(next[1]) > 30 && Number(next[1]) <= 45, r.stdout);
  });
});

describe('apm-sidecar config', () => {
  test('shows the socket and data paths the configuration resolves to', async () => {
    const runtime = join(tmp.dir, 'xdg');
    const r = await runCli(['config', '--transport', 'debug'], { XDG_RUNTIME_DIR: runtime, APM_SIDECAR_SOCKET: undefined });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^resolved socket path: +\/\S+\/apm\.sock$/m);
    assert.match(r.stdout, /^resolved data_dir: +\/\S+$/m);
    const j = await runCli(['config', '--json', '--socket', join(tmp.dir, 'x.sock'), '--data-dir', join(tmp.dir, 'd')]);
    const parsed = JSON.parse(j.stdout);
    assert.deepEqual(parsed.resolved, { socket: join(tmp.dir, 'x.sock'), dataDir: join(tmp.dir, 'd') });
  });

  test('validates the access key as run does: missing or malformed exits 2 naming access_key, a good one passes', async () => {
    const missing = await runCli(['config', '--transport', 'tcp'], { APM_SIDECAR_ACCESS_KEY: undefined });
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /access_key: required for transport tcp/);
    const run = await runCli(['run', '--transport', 'tcp', '--socket', join(tmp.dir, 'never.sock')], { APM_SIDECAR_ACCESS_KEY: undefined });
    assert.equal(run.code, 2);
    assert.equal(missing.stderr, run.stderr, 'the same message as run');

    const bad = await runCli(['config', '--json'], { APM_SIDECAR_ACCESS_KEY: 'apmk.diag.not-a-secret-at-all' });
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /access_key: access key is malformed: secret must be 43 base64url characters \(from env:APM_SIDECAR_ACCESS_KEY\)/);
    assert.doesNotMatch(bad.stderr + bad.stdout, /not-a-secret-at-all/);
    assert.equal(JSON.parse(bad.stdout).valid.ok, false);

    const good = await runCli(['config'], { APM_SIDECAR_ACCESS_KEY: KEY });
    assert.equal(good.code, 0, good.stderr);
    assert.doesNotMatch(good.stdout, new RegExp(KEY.split('.')[2] as string));
  });
});
