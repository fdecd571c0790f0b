import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { openSync, writeFileSync, closeSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { formatAccessKey } from '@apm-sidecar/proto/upstream';
import { connect } from '@apm-sidecar/shim';
import { runCli, startSidecar, tempDir, totalCount, waitFor } from '../helpers/procs';

function httpGet(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path }, (res) => {
      let body = '';
      res.on('data', (d) => {
        body += d;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** A well-formed access key: `config` validates it as `run` does. */
const SECRET_KEY = formatAccessKey({ projectId: 'cli', secret: Buffer.alloc(32, 7) });

describe('apm-sidecar CLI', () => {
  const tmp = tempDir();
  after(() => tmp.cleanup());

  test('an unknown key exits 2 naming the key and its source', async () => {
    const r = await runCli(['run', '--transport', 'debug', '--set', 'no_such_key=1']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /no_such_key/);
    assert.match(r.stderr, /flag:--set/);
  });

  test('a bad value from the environment exits 2 naming the key and the variable', async () => {
    const r = await runCli(['run', '--transport', 'debug'], { APM_SIDECAR_SERVER_PORT: 'abc' });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /server_port/);
    assert.match(r.stderr, /env:APM_SIDECAR_SERVER_PORT/);
  });

  test('a bad value in the config file exits 2 naming the file and line', async () => {
    const file = join(tmp.dir, 'bad.conf');
    writeFileSync(file, '# comment\nflush_ms = 100\nqueue_size_typo = 3\n');
    const r = await runCli(['run', '--transport', 'debug', '--config', file]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /queue_size_typo/);
    assert.ok(r.stderr.includes(`file:${file}:3`), r.stderr);
  });

  test('an unknown flag is a usage error (exit 2)', async () => {
    const r = await runCli(['run', '--no-such-flag']);
    assert.equal(r.code, 2);
  });

  test('the access key is refused as a plain --set value', async () => {
    const r = await runCli(['config', '--set', 'access_key=sekrit-value-123']);
    assert.equal(r.code, 2);
    assert.doesNotMatch(r.stderr, /sekrit-value-123/);
  });

  test('config prints each value with its source, flags over env over file, and masks the access key', async () => {
    const file = join(tmp.dir, 'good.conf');
    writeFileSync(file, 'flush_ms = 250\nmetric_interval_ms = 5000\nserver_port = 7000\n');
    const r = await runCli(['config', '--config', file, '--server-port', '7100', '--json'], {
      APM_SIDECAR_METRIC_INTERVAL_MS: '6000',
      APM_SIDECAR_ACCESS_KEY: SECRET_KEY,
    });
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stdout, new RegExp(SECRET_KEY.split('.')[2] as string));
    const j = JSON.parse(r.stdout);
    assert.equal(j.values.flush_ms, 250);
    assert.equal(j.sources.flush_ms, `file:${file}:1`);
    assert.equal(j.values.metric_interval_ms, 6000);
    assert.equal(j.sources.metric_interval_ms, 'env:APM_SIDECAR_METRIC_INTERVAL_MS');
    assert.equal(j.values.server_port, 7100);
    assert.equal(j.sources.server_port, 'flag:--server-port');
    const text = await runCli(['config', '--config', file], { APM_SIDECAR_ACCESS_KEY: SECRET_KEY });
    assert.doesNotMatch(text.stdout, new RegExp(SECRET_KEY.split('.')[2] as string));
    assert.match(text.stdout, /access_key/);
  });

  test('status without a running sidecar fails clearly', async () => {
    const r = await runCli(['status', '--socket', join(tmp.dir, 'nobody.sock')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /no sidecar is listening/);
  });

  test('status --json has the documented fields', async () => {
    const sc = await startSidecar(join(tmp.dir, 'st'), ['--set', 'flush_ms=50', '--set', 'metric_interval_ms=200']);
    const apm = connect({ app: 'status-app', socket: sc.socket, flushMs: 50 });
    try {
      apm.counter('s.n').add(1);
      apm.event({ type: 'e', message: 'm' });
      assert.equal(await apm.flush(), true);
      const r = await runCli(['status', '--json', '--socket', sc.socket]);
      assert.equal(r.code, 0, r.stderr);
      const s = JSON.parse(r.stdout);
      assert.equal(s.state, 'active');
      for (const q of ['queue1', 'queue2']) for (const f of ['depth', 'capacity', 'dropped']) assert.equal(typeof s.queues[q][f], 'number');
      assert.equal(s.queues.queue1.capacity, 512);
      assert.equal(s.queues.queue2.capacity, 1024);
      assert.equal(typeof s.retention.rows, 'number');
      assert.equal(typeof s.retention.oldestAgeMs, 'number');
      for (const k of ['metrics', 'traces', 'events', 'snapshots', 'btRegistrations']) {
        assert.equal(typeof s.counters.received[k], 'number');
        assert.equal(typeof s.counters.sent[k], 'number');
      }
      assert.equal(s.counters.received.metrics, 1);
      assert.equal(s.counters.received.events, 1);
      assert.equal(s.shims.length, 1);
      assert.equal(s.shims[0].app, 'status-app');
      const human = await runCli(['status', '--socket', sc.socket]);
      assert.match(human.stdout, /state:\s+active/);
    } finally {
      await apm.close();
      await sc.kill('SIGTERM');
    }
  });

  test('SIGTERM emits the open interval, exits 0, and removes the socket', async () => {
    const sc = await startSidecar(join(tmp.dir, 'term'), ['--set', 'flush_ms=50', '--set', 'metric_interval_ms=600000']);
    const apm = connect({ app: 'term', socket: sc.socket, flushMs: 50 });
    apm.histogram('term.lat').record(42);
    assert.equal(await apm.flush(), true);
    await apm.close();
    assert.equal(totalCount(sc, 'term.lat'), 0, 'a 10-minute interval is still open');
    const code = await sc.kill('SIGTERM');
    assert.equal(code, 0);
    assert.equal(totalCount(sc, 'term.lat'), 1, 'the open interval was flushed on the way out');
    assert.equal(sc.logs('stopped').length, 1);
    assert.throws(() => execFileSync('test', ['-S', sc.socket]));
  });

  test('--http serves /healthz, /readyz and Prometheus /metrics', async () => {
    const port = 20000 + (process.pid % 20000);
    const sc = await startSidecar(join(tmp.dir, 'http'), ['--http', `127.0.0.1:${port}`]);
    try {
      await waitFor('http', () => sc.logs('serving /healthz').length > 0);
      assert.equal((await httpGet(port, '/healthz')).status, 200);
      const ready = await httpGet(port, '/readyz');
      assert.equal(ready.status, 200);
      assert.equal(JSON.parse(ready.body).ready, true);
      const m = await httpGet(port, '/metrics');
      assert.match(m.body, /apm_sidecar_state\{state="active"\} 1/);
      assert.match(m.body, /apm_sidecar_queue_depth\{queue="queue1"\} 0/);
      assert.match(m.body, /^apm_sidecar_retention_rows \d+$/m);
      assert.equal((await httpGet(port, '/nope')).status, 404);
    } finally {
      await sc.kill('SIGTERM');
    }
  });

  test('drops the oldest trace when queue2 is full and counts it', async () => {
    const dir = join(tmp.dir, 'q2');
    const fifo = join(tmp.dir, 'stalled.fifo');
    execFileSync('mkfifo', [fifo]);
    // A reader that opens the FIFO and never reads: the debug output stalls once the pipe buffer is full.
    const holder = spawn('sleep', ['60'], { stdio: ['ignore', 'ignore', 'ignore'] });
    const fd = openSync(fifo, 'r+');
    const sc = await startSidecar(dir, ['--set', `debug_output=${fifo}`, '--set', 'net_send_queue2_size=50']);
    const apm = connect({ app: 'flood', socket: sc.socket, flushMs: 50 });
    try {
      const big = 'x'.repeat(2000);
      for (let i = 0; i < 600; i++) {
        const tx = apm.startTransaction('GET /flood');
        tx.step('sql', big, 1);
        tx.end();
      }
      // All received, and the output stalled with packs waiting in queue2.
      const s = await waitFor('queue2 to back up behind the stalled output', async () => {
        const st = JSON.parse((await runCli(['status', '--json', '--socket', sc.socket])).stdout);
        const q = st.queues.queue2;
        return st.counters.received.traces === 600 && q.depth > 0 && st.counters.sent.traces + q.depth + q.dropped === 600 ? st : null;
      });
      assert.ok(s.queues.queue2.depth <= 50, 'queue2 never holds more than its capacity');
      assert.ok(s.queues.queue2.dropped > 0, 'the overflow was dropped');
      assert.equal(s.counters.dropped.queue2_full, s.queues.queue2.dropped, 'and counted by reason');
      assert.equal(s.counters.sent.traces + s.queues.queue2.depth + s.queues.queue2.dropped, 600, 'every trace is accounted for');
      assert.equal(sc.logs('queue2 is full').length, 1, 'logged once when dropping starts');
    } finally {
      await apm.close();
      await sc.kill('SIGKILL');
      closeSync(fd);
      holder.kill();
    }
  });
});
