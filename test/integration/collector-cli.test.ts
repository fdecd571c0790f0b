import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { MetricKind, Sketch, encodeSeries } from '@apm-sidecar/proto';
import { parseAccessKey } from '@apm-sidecar/proto/upstream';
import { SqliteStore } from '@apm-sidecar/collector';
import { COLLECTOR_CLI, runCollector } from '../helpers/collector';
import { Proc, tempDir, waitFor } from '../helpers/procs';

interface Listening {
  agents: { host: string; port: number };
  http: { host: string; port: number };
}

async function startCollector(dataDir: string, extra: string[] = []): Promise<{ proc: Proc; addr: Listening }> {
  const child = spawn(
    process.execPath,
    [COLLECTOR_CLI, 'run', '--port', '0', '--host', '127.0.0.1', '--http', '127.0.0.1:0', '--data-dir', dataDir, ...extra],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const proc = new Proc(child);
  const line = await waitFor(
    'the collector to listen',
    () => {
      if (!proc.alive) throw new Error(`collector exited ${proc.exitCode}: ${proc.stderr}`);
      return proc.lines.find((l) => l.msg === 'listening');
    },
    15000,
  );
  return { proc, addr: line as unknown as Listening };
}

function get(port: number, path: string, method = 'GET'): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        body += d;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body }));
    });
    req.on('error', reject);
    req.end();
  });
}

const lastLine = (s: string): string => s.trimEnd().split('\n').at(-1) ?? '';

describe('apm-collector CLI', () => {
  const tmp = tempDir('apm-coll-');
  after(() => tmp.cleanup());

  test('keys create prints the access key alone on the last line; keys list never shows the secret', async () => {
    const dataDir = join(tmp.dir, 'keys');
    const r = await runCollector(['keys', 'create', '--project', 'Checkout EU', '--data-dir', dataDir]);
    assert.equal(r.code, 0, r.stderr);
    const keyText = lastLine(r.stdout);
    assert.match(keyText, /^apmk\.checkout-eu-[0-9a-f]{6}\.[A-Za-z0-9_-]{43}$/);
    const key = parseAccessKey(keyText);
    const secretB64 = keyText.split('.')[2] as string;
    assert.equal(r.stdout.split(secretB64).length, 2, 'the secret appears exactly once');
    assert.equal(statSync(dataDir).mode & 0o777, 0o700);
    assert.equal(statSync(join(dataDir, 'collector.db')).mode & 0o777, 0o600);

    const list = await runCollector(['keys', 'list', '--data-dir', dataDir]);
    assert.equal(list.code, 0, list.stderr);
    assert.ok(list.stdout.includes(key.projectId));
    assert.ok(list.stdout.includes('Checkout EU'));
    const json = await runCollector(['keys', 'list', '--json', '--data-dir', dataDir]);
    assert.equal(json.code, 0, json.stderr);
    const rows = JSON.parse(json.stdout) as Record<string, string>[];
    assert.equal(rows.length, 1);
    assert.deepEqual(Object.keys(rows[0] as object).sort(), ['createdAt', 'fingerprint', 'name', 'projectId', 'revokedAt']);
    assert.equal(rows[0]?.revokedAt, null);
    assert.equal(rows[0]?.projectId, key.projectId);
    assert.ok(!Number.isNaN(Date.parse(rows[0]?.createdAt as string)));
    for (const out of [list.stdout, json.stdout, list.stderr, json.stderr]) {
      assert.ok(!out.includes(secretB64), 'the secret is not listed');
      assert.ok(!out.includes(key.secret.toString('hex')), 'the secret is not listed (hex)');
    }
  });

  test('the data directory comes from APM_COLLECTOR_DATA_DIR when --data-dir is absent', async () => {
    const dataDir = join(tmp.dir, 'from-env');
    const r = await runCollector(['keys', 'create', '--project', 'env'], { env: { APM_COLLECTOR_DATA_DIR: dataDir } });
    assert.equal(r.code, 0, r.stderr);
    assert.ok(statSync(join(dataDir, 'collector.db')).isFile());
    const list = await runCollector(['keys', 'list', '--json'], { env: { APM_COLLECTOR_DATA_DIR: dataDir } });
    assert.equal((JSON.parse(list.stdout) as unknown[]).length, 1);
  });

  test('keys create without a usable project name is a usage error (exit 2)', async () => {
    const dataDir = join(tmp.dir, 'bad-name');
    assert.equal((await runCollector(['keys', 'create', '--data-dir', dataDir])).code, 2);
    const r = await runCollector(['keys', 'create', '--project', '   ', '--data-dir', dataDir]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /project name/);
  });

  for (const [args, pattern] of [
    [['--set', 'no_such_key=1'], /no_such_key/],
    [['--set', 'idle_ping_ms=soon'], /idle_ping_ms/],
    [['--set', 'max_frame_bytes=10'], /max_frame_bytes/],
    [['--set', 'stall_after_ms'], /stall_after_ms/],
    [['--set', 'store_retention_days=0'], /store_retention_days/],
    [['--set', 'collector_dead_after_ms=5000'], /collector_dead_after_ms.*collector_heartbeat_ms/],
    [['--port', '70000'], /--port/],
    [['--http', '127.0.0.1'], /--http/],
    [['--licenses', '-1'], /--licenses/],
    [['--log-level', 'loud'], /--log-level/],
  ] as [string[], RegExp][]) {
    test(`run ${args.join(' ')} exits 2 naming what is wrong`, async () => {
      const r = await runCollector(['run', '--data-dir', join(tmp.dir, 'unused'), '--port', '0', '--http', '127.0.0.1:0', ...args]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, pattern);
    });
  }

  test('a corrupt database file: run and keys exit 1 with ERR_STORE_CORRUPT and the file is left as it was', async () => {
    const dataDir = join(tmp.dir, 'corrupt');
    await runCollector(['keys', 'list', '--data-dir', dataDir]);
    const file = join(dataDir, 'collector.db');
    const junk = Buffer.from('definitely not sqlite\n'.repeat(500));
    writeFileSync(file, junk);
    const run = await runCollector(['run', '--data-dir', dataDir, '--port', '0', '--http', '127.0.0.1:0']);
    assert.equal(run.code, 1);
    assert.match(run.stderr, /ERR_STORE_CORRUPT/);
    assert.match(run.stderr, /collector\.db/);
    const keys = await runCollector(['keys', 'list', '--data-dir', dataDir]);
    assert.equal(keys.code, 1);
    assert.match(keys.stderr, /ERR_STORE_CORRUPT/);
    assert.deepEqual(readFileSync(file), junk);
  });

  test('run listens on free ports (--port 0, --http 127.0.0.1:0), logs them, serves the API and stops on SIGTERM', async () => {
    const dataDir = join(tmp.dir, 'run');
    const created = await runCollector(['keys', 'create', '--project', 'shop', '--data-dir', dataDir]);
    const secretB64 = lastLine(created.stdout).split('.')[2] as string;
    const { proc, addr } = await startCollector(dataDir);
    try {
      assert.equal(addr.http.host, '127.0.0.1');
      assert.ok(addr.http.port > 0 && addr.agents.port > 0);
      assert.notEqual(addr.http.port, addr.agents.port);
      const port = addr.http.port;

      assert.deepEqual(JSON.parse((await get(port, '/api/agents')).body), []);
      assert.deepEqual(JSON.parse((await get(port, '/api/metrics')).body), []);
      const stats = JSON.parse((await get(port, '/api/stats')).body) as Record<string, Record<string, number>>;
      assert.deepEqual(stats.received, { metricPoints: 0, traces: 0, events: 0, snapshots: 0, btRegistrations: 0, activeStacks: 0 });
      assert.equal(stats.droppedLate as unknown as number, 0);
      for (const k of ['badKey', 'replay', 'tampered', 'tooLarge']) assert.equal(stats.rejected?.[k], 0);
      assert.equal((await get(port, '/healthz')).status, 200);
      const metrics = await get(port, '/metrics');
      assert.match(metrics.body, /^# HELP apm_collector_sessions /m);
      assert.match(metrics.body, /^apm_collector_late_points_dropped_total 0$/m);
      const page = await get(port, '/');
      assert.equal(page.status, 200);
      assert.match(page.type, /text\/html/);

      // Another process writes to the same database while the collector runs (WAL): the API sees it.
      const T = Date.now() - 60_000;
      const side = SqliteStore.open(dataDir);
      try {
        side.agentConnected('shop-000000', { agentId: 'pod-7', host: 'node-3', version: '0.1.0', apps: ['checkout'] }, T);
        side.agentLicensed({ projectId: 'shop-000000', agentId: 'pod-7' }, true);
        const sk = new Sketch();
        for (let v = 1; v <= 100; v++) sk.add(v);
        const lat = {
          key: encodeSeries(MetricKind.Histogram, 'http.server.duration', { route: '/pay' }).toString('latin1'),
          kind: MetricKind.Histogram,
          name: 'http.server.duration',
          tags: { route: '/pay' },
        };
        side.storeMetrics(
          { projectId: 'shop-000000', agentId: 'pod-7' },
          [
            {
              packId: 'p1',
              intervalStart: T,
              intervalMs: 10_000,
              points: [{ series: lat, count: 100, sum: 5050, min: 1, max: 100, last: Number.NaN, sketch: sk }],
            },
          ],
          T,
        );
      } finally {
        side.close();
      }
      const agents = JSON.parse((await get(port, '/api/agents')).body) as Record<string, unknown>[];
      assert.equal(agents.length, 1);
      const a = agents[0] as Record<string, unknown>;
      assert.deepEqual(
        { agentId: a.agentId, app: a.app, host: a.host, state: a.state, lastSeenAt: a.lastSeenAt, licensed: a.licensed },
        { agentId: 'pod-7', app: 'checkout', host: 'node-3', state: 'live', lastSeenAt: new Date(T).toISOString(), licensed: true },
      );
      const pts = JSON.parse((await get(port, `/api/metrics?agent=pod-7&name=http.server.duration&from=${T}&to=${T + 1}`)).body) as Record<string, unknown>[];
      assert.equal(pts.length, 1);
      const p = pts[0] as Record<string, number>;
      assert.deepEqual(
        { name: p.name, tags: p.tags, ts: p.ts, count: p.count, sum: p.sum, min: p.min, max: p.max },
        { name: 'http.server.duration', tags: { route: '/pay' }, ts: T, count: 100, sum: 5050, min: 1, max: 100 },
      );
      assert.ok(Math.abs(p.p50 - 50) <= 0.5 && Math.abs(p.p95 - 95) <= 0.95 && Math.abs(p.p99 - 99) <= 0.99, JSON.stringify(p));

      for (const q of ['from=yesterday', 'to=1.5', 'from=5&to=1', 'limit=abc']) {
        const r = await get(port, `/api/metrics?${q}`);
        assert.equal(r.status, 400, q);
        assert.match(r.type, /^application\/json/);
        assert.equal((JSON.parse(r.body) as { error: { code: string } }).error.code, 'ERR_BAD_QUERY');
      }
      const nf = await get(port, '/nope');
      assert.equal(nf.status, 404);
      assert.equal((JSON.parse(nf.body) as { error: { code: string } }).error.code, 'ERR_NOT_FOUND');
      assert.equal((await get(port, '/api/stats', 'POST')).status, 405);

      // keys create works against the database of a running collector.
      const more = await runCollector(['keys', 'create', '--project', 'second', '--data-dir', dataDir]);
      assert.equal(more.code, 0, more.stderr);

      proc.child.kill('SIGTERM');
      assert.equal(await proc.exited, 0);
      assert.ok(proc.logs('stopped').length === 1, 'logs "stopped"');
      assert.ok(!proc.raw.join('\n').includes(secretB64), 'the key secret is never logged');
    } finally {
      await proc.kill();
    }
    // The database is intact and keeps everything after the shutdown.
    const again = SqliteStore.open(dataDir);
    try {
      assert.equal(again.listKeys().length, 2);
      assert.equal(again.queryMetrics({ agent: 'pod-7' }).length, 1);
    } finally {
      again.close();
    }
  });

  test('on start every known agent is disconnected (no session survives a restart)', async () => {
    const dataDir = join(tmp.dir, 'restart');
    const side = SqliteStore.open(dataDir);
    side.agentConnected('p-000000', { agentId: 'pod-1', host: 'h', version: '1', apps: ['a'] }, Date.now());
    side.close();
    const { proc, addr } = await startCollector(dataDir);
    try {
      const agents = JSON.parse((await get(addr.http.port, '/api/agents')).body) as Record<string, unknown>[];
      assert.equal(agents[0]?.state, 'disconnected');
      assert.equal(agents[0]?.licensed, false);
      proc.child.kill('SIGINT');
      assert.equal(await proc.exited, 0);
    } finally {
      await proc.kill();
    }
  });
  test('old data is pruned by the running collector and counted in /api/stats and /metrics', async () => {
    const dataDir = join(tmp.dir, 'prune');
    const old = Date.now() - 3 * 86_400_000;
    const side = SqliteStore.open(dataDir);
    const origin = { app: 'shop', instanceId: 'i1', pid: 1 };
    side.agentConnected('p-000000', { agentId: 'pod-1', host: 'h', version: '1', apps: ['shop'] }, old);
    side.storeText(
      { projectId: 'p-000000', agentId: 'pod-1' },
      Array.from({ length: 7 }, (_, i) => ({ kind: 'event' as const, origin, event: { ts: old + i, type: 'log', message: `old ${i}` } })),
    );
    side.close();
    const { proc, addr } = await startCollector(dataDir, ['--set', 'store_retention_days=1', '--set', 'store_prune_interval_ms=50']);
    try {
      const pruned = await waitFor(
        'a run of the pruner',
        async () => {
          const s = JSON.parse((await get(addr.http.port, '/api/stats')).body) as { pruned: { runs: number; rows: number; errors: number } };
          return s.pruned.rows > 0 ? s.pruned : undefined;
        },
        10000,
      );
      assert.equal(pruned.rows, 7);
      assert.equal(pruned.errors, 0);
      const metrics = (await get(addr.http.port, '/metrics')).body;
      assert.match(metrics, /^apm_collector_pruned_rows_total 7$/m);
      assert.match(metrics, /^apm_collector_prune_errors_total 0$/m);
      assert.deepEqual(JSON.parse((await get(addr.http.port, '/api/events')).body), []);
    } finally {
      await proc.kill();
    }
  });
});
