import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { type Server, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { MetricKind, Sketch, encodeSeries } from '@apm-sidecar/proto';
import { CollectorStats, SqliteCollectorStore, SqliteStore, closeServer, createHttpApi, createLogger, listen, metricQueryFrom } from '@apm-sidecar/collector';

interface Res {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function call(port: number, path: string, method = 'GET', body?: Buffer, headers: Record<string, string> = {}): Promise<Res> {
  return new Promise((resolve, reject) => {
    // Node sends a GET body raw unless told how to frame it: say it (content-length unless chunked is asked for).
    const h = body !== undefined && headers['transfer-encoding'] === undefined ? { 'content-length': String(body.length), ...headers } : headers;
    const req = request({ host: '127.0.0.1', port, path, method, headers: h }, (res) => {
      let b = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        b += d;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: b }));
    });
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

function assertJsonError(r: Res, status: number, code: string): void {
  assert.equal(r.status, status, r.body);
  assert.match(String(r.headers['content-type']), /^application\/json/);
  const j = JSON.parse(r.body) as { error: { code: string; message: string } };
  assert.equal(j.error.code, code);
  assert.equal(typeof j.error.message, 'string');
  assert.ok(j.error.message.length > 0);
}

const T0 = 1_700_000_000_000;

describe('collector HTTP API (in process)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'apm-http-'));
  const store = SqliteStore.open(dir);
  const stats = new CollectorStats();
  let now = T0 + 60_000;
  let server: Server;
  let port = 0;
  const tunnelHits: string[] = [];

  before(async () => {
    const sk = new Sketch();
    for (const v of [10, 20, 30, 40]) sk.add(v);
    const hist = {
      key: encodeSeries(MetricKind.Histogram, 'lat', { route: '/a' }).toString('latin1'),
      kind: MetricKind.Histogram,
      name: 'lat',
      tags: { route: '/a' },
    };
    const gauge = { key: encodeSeries(MetricKind.Gauge, 'pool', {}).toString('latin1'), kind: MetricKind.Gauge, name: 'pool', tags: {} };
    store.agentConnected('proj', { agentId: 'live-1', host: 'h1', version: '1', apps: ['shop', 'other'] }, T0);
    store.agentLicensed({ projectId: 'proj', agentId: 'live-1' }, true);
    store.agentConnected('proj', { agentId: 'gone-recently', host: 'h2', version: '1', apps: ['shop'] }, T0);
    store.setAgentState({ projectId: 'proj', agentId: 'gone-recently' }, 'disconnected', { at: T0 + 50_000, reason: 'test' });
    store.agentConnected('proj', { agentId: 'gone-long-ago', host: 'h3', version: '1', apps: [] }, T0);
    store.setAgentState({ projectId: 'proj', agentId: 'gone-long-ago' }, 'disconnected', { at: T0, reason: 'test' });
    store.storeMetrics(
      { projectId: 'proj', agentId: 'live-1' },
      [
        {
          packId: 'p1',
          intervalStart: T0,
          intervalMs: 10_000,
          points: [
            { series: hist, count: 4, sum: 100, min: 10, max: 40, last: Number.NaN, sketch: sk },
            { series: gauge, count: 1, sum: 7, min: 7, max: 7, last: 7, sketch: null },
          ],
        },
      ],
      T0,
    );
    stats.received.metricPoints = 2;
    stats.rejected.badKey = 3;
    stats.frames.MetricBatch = 5;
    stats.sessions.tcp = 1;
    stats.droppedLate = 4;
    server = createHttpApi({
      store: new SqliteCollectorStore(store),
      stats,
      log: createLogger('silent'),
      disconnectedRetentionMs: 30_000,
      maxBodyBytes: 1024,
      clock: { now: () => now },
      extraRoutes: (req, res) => {
        if (req.url?.startsWith('/tunnel') !== true) return false;
        tunnelHits.push(req.method ?? '');
        req.resume();
        res.writeHead(204).end();
        return true;
      },
    });
    port = (await listen(server, '127.0.0.1', 0)).port;
  });

  after(async () => {
    await closeServer(server);
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('GET /api/agents lists agents with ISO lastSeenAt, hiding those disconnected longer than the retention', async () => {
    const r = await call(port, '/api/agents');
    assert.equal(r.status, 200);
    const agents = JSON.parse(r.body) as Record<string, unknown>[];
    assert.deepEqual(
      agents.map((a) => a.agentId),
      ['gone-recently', 'live-1'],
    );
    const live = agents.find((a) => a.agentId === 'live-1') as Record<string, unknown>;
    assert.deepEqual(
      { agentId: live.agentId, app: live.app, host: live.host, state: live.state, lastSeenAt: live.lastSeenAt, licensed: live.licensed },
      { agentId: 'live-1', app: 'shop', host: 'h1', state: 'live', lastSeenAt: new Date(T0).toISOString(), licensed: true },
    );
    assert.equal(agents.find((a) => a.agentId === 'gone-recently')?.state, 'disconnected');
    now = T0 + 500_000;
    const later = JSON.parse((await call(port, '/api/agents')).body) as Record<string, unknown>[];
    assert.deepEqual(
      later.map((a) => a.agentId),
      ['live-1'],
    );
  });

  it('GET /api/metrics returns points with quantiles for histograms and value for gauges', async () => {
    const r = await call(port, `/api/metrics?agent=live-1&from=${T0}&to=${T0 + 10_000}`);
    assert.equal(r.status, 200);
    const pts = JSON.parse(r.body) as Record<string, unknown>[];
    assert.equal(pts.length, 2);
    const lat = pts.find((p) => p.name === 'lat') as Record<string, number | null | object>;
    for (const k of ['name', 'tags', 'ts', 'count', 'sum', 'min', 'max', 'p50', 'p95', 'p99']) assert.ok(k in lat, k);
    assert.deepEqual(lat.tags, { route: '/a' });
    assert.equal(lat.ts, T0);
    assert.equal(lat.count, 4);
    assert.ok(Math.abs((lat.p50 as number) - 20) / 20 <= 0.01, String(lat.p50));
    const pool = pts.find((p) => p.name === 'pool') as Record<string, unknown>;
    assert.equal(pool.value, 7);
    assert.equal(pool.p50, null);
    assert.equal((JSON.parse((await call(port, `/api/metrics?name=lat&from=${T0 + 1}`)).body) as unknown[]).length, 0);
  });

  for (const q of [
    'from=abc',
    'to=-5',
    'from=1.5',
    'from=1e3',
    'to=99999999999999999999',
    'limit=0',
    'limit=100001',
    'from=10&to=5',
    'agent=a&agent=b',
    'name=',
  ]) {
    it(`GET /api/metrics?${q} is a 400 with a JSON error`, async () => {
      assertJsonError(await call(port, `/api/metrics?${q}`), 400, 'ERR_BAD_QUERY');
    });
  }

  it('metricQueryFrom accepts the valid parameters and ignores unknown ones', () => {
    assert.deepEqual(metricQueryFrom(new URLSearchParams('agent=a&name=n&from=1&to=2&limit=3&_=x')), { agent: 'a', name: 'n', from: 1, to: 2, limit: 3 });
  });

  it('GET /api/stats has the DESIGN §7 shape', async () => {
    const s = JSON.parse((await call(port, '/api/stats')).body) as Record<string, Record<string, number>>;
    assert.deepEqual(Object.keys(s.received ?? {}).sort(), ['activeStacks', 'btRegistrations', 'events', 'metricPoints', 'snapshots', 'traces']);
    assert.equal(s.received?.metricPoints, 2);
    assert.equal(s.droppedLate as unknown as number, 4);
    for (const k of ['badKey', 'replay', 'tampered', 'tooLarge']) assert.equal(typeof s.rejected?.[k], 'number');
    assert.equal(s.rejected?.badKey, 3);
    assert.deepEqual(s.agents, { live: 1, stalled: 0, disconnected: 2 });
  });

  it('GET /metrics is Prometheus text with sessions, agents, frames, rejections and late drops', async () => {
    const r = await call(port, '/metrics');
    assert.equal(r.status, 200);
    assert.match(String(r.headers['content-type']), /^text\/plain; version=0\.0\.4/);
    for (const line of [
      'apm_collector_sessions{transport="tcp"} 1',
      'apm_collector_agents{state="live"} 1',
      'apm_collector_agents{state="disconnected"} 2',
      'apm_collector_frames_total{type="MetricBatch"} 5',
      'apm_collector_rejected_total{reason="badKey"} 3',
      'apm_collector_late_points_dropped_total 4',
    ]) {
      assert.ok(r.body.split('\n').includes(line), `missing ${line}`);
    }
    for (const l of r.body.trim().split('\n')) assert.match(l, /^(# (HELP|TYPE) \w+ .+|\w+(\{[^}]*\})? -?[\d.e+]+)$/, l);
  });

  it('GET /healthz and GET / (the HTML page) answer 200', async () => {
    assert.equal((await call(port, '/healthz')).status, 200);
    const page = await call(port, '/');
    assert.equal(page.status, 200);
    assert.match(String(page.headers['content-type']), /^text\/html/);
    assert.match(page.body, /\/api\/agents/);
    const head = await call(port, '/api/agents', 'HEAD');
    assert.equal(head.status, 200);
    assert.equal(head.body, '');
  });

  it('the page’s own files are served with their content types; nothing else from disk', async () => {
    for (const [path, type] of [
      ['/app.js', /^text\/javascript/],
      ['/style.css', /^text\/css/],
      ['/index.html', /^text\/html/],
    ] as const) {
      const r = await call(port, path);
      assert.equal(r.status, 200, path);
      assert.match(String(r.headers['content-type']), type, path);
      assert.equal(r.headers['x-content-type-options'], 'nosniff');
      assert.ok(r.body.length > 0, path);
    }
    assert.match(String((await call(port, '/')).headers['content-security-policy']), /default-src 'none'/);
    for (const path of ['/../package.json', '/%2e%2e/package.json', '/..%2fpackage.json', '/public/app.js', '/app.js/', '/APP.JS', '/dist/cli.js']) {
      assertJsonError(await call(port, path), 404, 'ERR_NOT_FOUND');
    }
  });

  it('an unknown path is a 404 JSON error, a wrong method a 405 with Allow', async () => {
    assertJsonError(await call(port, '/api/nope'), 404, 'ERR_NOT_FOUND');
    assertJsonError(await call(port, '//api/agents'), 404, 'ERR_NOT_FOUND');
    const r = await call(port, '/api/agents', 'DELETE');
    assertJsonError(r, 405, 'ERR_METHOD_NOT_ALLOWED');
    assert.equal(r.headers.allow, 'GET, HEAD');
  });

  it('a body over the limit is a 413 JSON error, declared or chunked', async () => {
    assertJsonError(await call(port, '/api/agents', 'GET', Buffer.alloc(4096, 1)), 413, 'ERR_BODY_TOO_LARGE');
    assertJsonError(await call(port, '/api/agents', 'GET', Buffer.alloc(4096, 1), { 'transfer-encoding': 'chunked' }), 413, 'ERR_BODY_TOO_LARGE');
    assert.equal((await call(port, '/api/agents', 'GET', Buffer.alloc(10, 1))).status, 200);
  });

  it('extraRoutes sees requests first (the HTTP tunnel plugs in there)', async () => {
    assert.equal((await call(port, '/tunnel/x', 'POST', Buffer.alloc(4096, 1))).status, 204);
    assert.deepEqual(tunnelHits, ['POST']);
  });

  it('malformed HTTP gets a JSON 400 and the server keeps serving', async () => {
    const raw = await new Promise<string>((resolve) => {
      const s = connect(port, '127.0.0.1', () => s.write('NOT HTTP AT ALL\r\n\r\n'));
      let b = '';
      s.on('data', (d) => {
        b += d.toString();
      });
      s.on('close', () => resolve(b));
    });
    assert.match(raw, /^HTTP\/1\.1 400/);
    assert.match(raw, /"ERR_BAD_REQUEST"/);
    assert.equal((await call(port, '/healthz')).status, 200);
    assert.ok((server.address() as AddressInfo).port > 0);
  });
});

describe('collector HTTP API: projects', () => {
  const dir = mkdtempSync(join(tmpdir(), 'apm-http-proj-'));
  const store = SqliteStore.open(dir);
  let server: Server;
  let port = 0;
  const counter = { key: encodeSeries(MetricKind.Counter, 'orders', {}).toString('latin1'), kind: MetricKind.Counter, name: 'orders', tags: {} };
  const origin = { app: 'shop', instanceId: 'i', pid: 1 };
  const TRACE = 'a'.repeat(32);
  const OTHER_TRACE = 'b'.repeat(32);

  before(async () => {
    for (const [projectId, n] of [
      ['alpha-000001', 2567],
      ['beta-000002', 1_483_000],
    ] as const) {
      const agent = { projectId, agentId: 'pod' };
      store.agentConnected(projectId, { agentId: 'pod', host: projectId, version: '1', apps: ['shop'] }, T0);
      store.storeMetrics(
        agent,
        [
          {
            packId: 'same-id',
            intervalStart: T0,
            intervalMs: 10_000,
            points: [{ series: counter, count: 1, sum: n, min: n, max: n, last: Number.NaN, sketch: null }],
          },
        ],
        T0,
      );
      store.storeText(agent, [
        { kind: 'event', origin, event: { ts: T0, type: 'deploy', message: projectId } },
        { kind: 'trace', origin, trace: { txid: 't', traceId: TRACE, spanId: 's', name: projectId, startTime: T0, durationMs: 1, steps: [] } },
        { kind: 'trace', origin, trace: { txid: 'u', traceId: OTHER_TRACE, spanId: 's', name: 'other', startTime: T0, durationMs: 1, steps: [] } },
        { kind: 'snapshot', origin, snapshot: { ts: T0, kind: 'config', data: { project: projectId } } },
        { kind: 'btRegistration', origin, name: `GET /${projectId}`, ts: T0 },
      ]);
    }
    server = createHttpApi({ store: new SqliteCollectorStore(store), stats: new CollectorStats(), log: createLogger('silent'), clock: { now: () => T0 } });
    port = (await listen(server, '127.0.0.1', 0)).port;
  });

  after(async () => {
    await closeServer(server);
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('every row carries its project; ?project= filters agents, metrics, traces, events, snapshots and registrations', async () => {
    const get = async (path: string) => {
      const r = await call(port, path);
      assert.equal(r.status, 200, r.body);
      return (JSON.parse(r.body) as Record<string, unknown>[]).map((x) => x.project).sort();
    };
    for (const route of ['/api/agents', '/api/metrics', `/api/traces?traceId=${TRACE}`, '/api/events', '/api/snapshots', '/api/registrations']) {
      const q = route.includes('?') ? '&' : '?';
      assert.deepEqual(await get(route), ['alpha-000001', 'beta-000002'], route);
      assert.deepEqual(await get(`${route}${q}project=beta-000002`), ['beta-000002'], route);
      assert.deepEqual(await get(`${route}${q}project=nope-000000`), [], route);
      assertJsonError(await call(port, `${route}${q}project=`), 400, 'ERR_BAD_QUERY');
    }
    const sums = JSON.parse((await call(port, '/api/metrics?project=alpha-000001&agent=pod')).body) as { sum: number }[];
    assert.deepEqual(
      sums.map((p) => p.sum),
      [2567],
    );
  });

  it('/api/traces?traceId= gives every part of one distributed trace; ?name= one transaction name; a bad trace id is a 400', async () => {
    const rows = JSON.parse((await call(port, `/api/traces?traceId=${OTHER_TRACE}`)).body) as { traceId: string; name: string; project: string }[];
    assert.deepEqual(rows.map((r) => [r.project, r.traceId, r.name]).sort(), [
      ['alpha-000001', OTHER_TRACE, 'other'],
      ['beta-000002', OTHER_TRACE, 'other'],
    ]);
    const named = JSON.parse((await call(port, '/api/traces?name=beta-000002')).body) as { name: string }[];
    assert.deepEqual(
      named.map((r) => r.name),
      ['beta-000002'],
    );
    for (const bad of ['abc', 'A'.repeat(32), `${'a'.repeat(31)}g`]) assertJsonError(await call(port, `/api/traces?traceId=${bad}`), 400, 'ERR_BAD_QUERY');
  });

  it('/api/snapshots gives what the app gave; /api/registrations lists names by agent', async () => {
    const snaps = JSON.parse((await call(port, '/api/snapshots?project=alpha-000001')).body) as { kind: string; data: unknown; ts: number; app: string }[];
    assert.deepEqual(snaps, [
      { project: 'alpha-000001', agentId: 'pod', app: 'shop', instanceId: 'i', ts: T0, kind: 'config', data: { project: 'alpha-000001' } },
    ]);
    const regs = JSON.parse((await call(port, '/api/registrations?limit=1')).body) as { name: string }[];
    assert.equal(regs.length, 1);
    assert.equal(regs[0]?.name, 'GET /alpha-000001');
  });
});
