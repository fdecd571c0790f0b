import assert from 'node:assert/strict';
import { request } from 'node:http';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { formatAccessKey } from '@apm-sidecar/proto/upstream';
import { connect } from '@apm-sidecar/shim';
import { runCli, type SidecarProc, startSidecar, tempDir, waitFor } from '../helpers/procs';

function httpGet(port: number, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path }, (res) => {
      let body = '';
      res.on('data', (d) => {
        body += d;
      });
      res.on('end', () => resolve(body));
    });
    req.on('error', reject);
    req.end();
  });
}

/** A loopback port nothing listens on. */
function closedPort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => resolve(typeof a === 'object' && a !== null ? a.port : 0));
    });
  });
}

async function httpPort(sc: SidecarProc): Promise<number> {
  const line = await sc.waitLine('the HTTP server', (l) => l.msg === 'serving /healthz, /readyz and /metrics');
  return (line.http as { port: number }).port;
}

/** `name type` of every `# TYPE` line, in order. */
function types(text: string): string[] {
  return [...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => `${m[1]} ${m[2]}`);
}

function sample(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  assert.ok(line !== undefined, `${series} is in /metrics`);
  return Number(line.slice(series.length + 1));
}

const ALWAYS = [
  'apm_sidecar_state gauge',
  'apm_sidecar_queue_depth gauge',
  'apm_sidecar_queue_capacity gauge',
  'apm_sidecar_dropped_total counter',
  'apm_sidecar_received_total counter',
  'apm_sidecar_sent_total counter',
  'apm_sidecar_ipc_errors_total counter',
  'apm_sidecar_http_errors_total counter',
  'apm_sidecar_duplicates_total counter',
  'apm_sidecar_shims gauge',
  'apm_sidecar_retention_rows gauge',
  'apm_sidecar_retention_oldest_age_seconds gauge',
  'apm_sidecar_retention_condition gauge',
  'apm_sidecar_retention_errors_total counter',
  'apm_sidecar_retention_refused_total counter',
  'apm_sidecar_retention_used_bytes gauge',
  'apm_sidecar_retention_fs_free_bytes gauge',
];
const UPSTREAM = [
  'apm_sidecar_reconnect_attempts_total counter',
  'apm_sidecar_upstream_bytes_sent_total counter',
  'apm_sidecar_upstream_frames_sent_total counter',
  'apm_sidecar_upstream_connected gauge',
  'apm_sidecar_upstream_session_errors_total counter',
];
const LAST = ['apm_sidecar_aggregation_points gauge'];

describe('sidecar /metrics', () => {
  const tmp = tempDir();
  after(() => tmp.cleanup());

  test('lists every metric once, in order, with the numbers apm-sidecar status shows', async () => {
    const sc = await startSidecar(join(tmp.dir, 'debug'), ['--http', '127.0.0.1:0', '--set', 'flush_ms=50']);
    const apm = connect({ app: 'metrics', socket: sc.socket, flushMs: 50 });
    try {
      const port = await httpPort(sc);
      apm.histogram('m.lat').record(3);
      assert.equal(await apm.flush(), true);
      // The retention is measured every second: wait for its space figures.
      await waitFor('the space measurement', async () => (await httpGet(port, '/metrics')).includes('apm_sidecar_retention_used_bytes '));
      const text = await httpGet(port, '/metrics');
      const status = JSON.parse((await runCli(['status', '--json', '--socket', sc.socket])).stdout);
      assert.deepEqual(types(text), [...ALWAYS, ...LAST], 'the debug transport has no upstream metrics');
      assert.equal(text.split('\n').filter((l) => l.startsWith('# HELP ')).length, ALWAYS.length + LAST.length);
      assert.ok(text.endsWith('\n') && !text.includes('\n\n'), 'one line per HELP, TYPE and sample');
      assert.equal(sample(text, 'apm_sidecar_received_total{kind="metrics"}'), status.counters.received.metrics);
      assert.ok(status.counters.received.metrics > 0);
      assert.equal(sample(text, 'apm_sidecar_shims'), status.shims.length);
      assert.equal(sample(text, 'apm_sidecar_shims'), 1);
      assert.equal(sample(text, 'apm_sidecar_queue_capacity{queue="queue2"}'), status.queues.queue2.capacity);
      assert.equal(sample(text, `apm_sidecar_state{state="${status.state}"}`), 1);
      assert.equal(sample(text, `apm_sidecar_retention_condition{condition="${status.retention.condition}"}`), 1);
    } finally {
      await apm.close();
      await sc.kill('SIGTERM');
    }
  });

  test('a tcp upstream adds its own metrics, the session errors by code', async () => {
    const key = formatAccessKey({ projectId: 'p1', secret: Buffer.alloc(32, 7) });
    const sc = await startSidecar(
      join(tmp.dir, 'tcp'),
      ['--http', '127.0.0.1:0', '--transport', 'tcp', '--server-host', '127.0.0.1', '--server-port', String(await closedPort())],
      { APM_SIDECAR_ACCESS_KEY: key },
    );
    try {
      const port = await httpPort(sc);
      const text = await waitFor('a refused connection in /metrics', async () => {
        const t = await httpGet(port, '/metrics');
        const ready = t.includes('apm_sidecar_upstream_session_errors_total{code="ECONNREFUSED"}') && t.includes('apm_sidecar_retention_used_bytes ');
        return ready ? t : null;
      });
      assert.deepEqual(types(text), [...ALWAYS, ...UPSTREAM, ...LAST]);
      assert.equal(sample(text, 'apm_sidecar_upstream_connected'), 0);
      assert.ok(sample(text, 'apm_sidecar_reconnect_attempts_total') >= 1);
    } finally {
      await sc.kill('SIGTERM');
    }
  });
});
