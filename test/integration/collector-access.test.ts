import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { request } from 'node:http';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { MetricKind, encodeSeries } from '@apm-sidecar/proto';
import { SqliteStore } from '@apm-sidecar/collector';
import type { TextItem } from '@apm-sidecar/proto/upstream';
import { type CollectorProc, createToken, runCollector, startCollector } from '../helpers/collector';
import { tempDir } from '../helpers/procs';

// Who can read the collected data over HTTP: read tokens, project scoping, protected mode.
// Every test runs the real collector process and talks to it over real HTTP on loopback.

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function get(port: number, path: string, o: { token?: string; auth?: string; host?: string; address?: string; method?: string } = {}): Promise<Reply> {
  const headers: Record<string, string> = {};
  if (o.token !== undefined) headers.authorization = `Bearer ${o.token}`;
  if (o.auth !== undefined) headers.authorization = o.auth;
  if (o.host !== undefined) headers.host = o.host;
  return new Promise((resolve, reject) => {
    const req = request({ host: o.address ?? '127.0.0.1', port, path, headers, method: o.method ?? 'GET' }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        body += d;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

const errorCode = (r: Reply): string => (JSON.parse(r.body) as { error: { code: string } }).error.code;

/** Two projects, one agent each, with a trace (its SQL step text), an event and a metric point. */
function seed(dataDir: string): { shop: string; bank: string } {
  const store = SqliteStore.open(dataDir);
  try {
    const shop = store.createKey('shop').projectId;
    const bank = store.createKey('bank').projectId;
    const T = Date.now() - 60_000;
    for (const [project, agent] of [
      [shop, 'agent-shop'],
      [bank, 'agent-bank'],
    ] as const) {
      store.agentConnected(project, { agentId: agent, host: 'h', version: '1', apps: ['app'] }, T);
      const origin = { app: 'app', instanceId: 'i-1', pid: 1 };
      const items: TextItem[] = [
        {
          kind: 'trace',
          origin,
          trace: {
            txid: `tx-${agent}`,
            traceId: `tr-${agent}`,
            spanId: 's',
            name: 'POST /pay',
            startTime: T,
            durationMs: 5,
            steps: [{ type: 'sql', offsetMs: 0, durationMs: 1, text: `SELECT secret FROM ${agent}` }],
          },
        },
        { kind: 'event', origin, event: { ts: T, type: 'deploy', message: `event of ${agent}` } },
      ];
      store.storeText({ projectId: project, agentId: agent }, items);
      const series = { key: encodeSeries(MetricKind.Counter, 'orders', {}).toString('latin1'), kind: MetricKind.Counter, name: 'orders', tags: {} };
      store.storeMetrics(
        { projectId: project, agentId: agent },
        [{ packId: 'p1', intervalStart: T, intervalMs: 10_000, points: [{ series, count: 1, sum: 1, min: 1, max: 1, last: Number.NaN, sketch: null }] }],
        T,
      );
    }
    return { shop, bank };
  } finally {
    store.close();
  }
}

const nonLoopbackIPv4 = (): string | undefined =>
  Object.values(networkInterfaces())
    .flat()
    .find((a) => a !== undefined && a.family === 'IPv4' && !a.internal)?.address;

describe('collector HTTP access', () => {
  const tmp = tempDir('apm-access-');
  const procs: CollectorProc[] = [];
  after(async () => {
    for (const p of procs) await p.kill('SIGKILL');
    tmp.cleanup();
  });
  const start = async (dataDir: string, extra: string[] = []): Promise<CollectorProc> => {
    const p = await startCollector(dataDir, extra);
    procs.push(p);
    return p;
  };

  test('protected mode: without a token the API, the page and /metrics answer only loopback Host names; Host: evil.example.com gets 403 ERR_PROTECTED_MODE, counted', async () => {
    const dir = join(tmp.dir, 'protected');
    seed(dir);
    const c = await start(dir);
    const port = c.httpPort;
    for (const path of ['/api/traces', '/api/events', '/api/agents', '/api/metrics', '/api/stats', '/', '/app.js', '/metrics']) {
      for (const host of ['evil.example.com', `evil.example.com:${port}`, 'localhost.evil.example.com', '127.0.0.1.evil.example.com', 'localhost:80x']) {
        const r = await get(port, path, { host });
        assert.equal(r.status, 403, `${path} with Host ${host}`);
        assert.equal(errorCode(r), 'ERR_PROTECTED_MODE');
        assert.doesNotMatch(r.body, /SELECT secret/);
      }
    }
    for (const host of ['localhost', `localhost:${port}`, `127.0.0.1:${port}`, '127.1.2.3', `[::1]:${port}`, 'LOCALHOST']) {
      const r = await get(port, '/api/traces', { host });
      assert.equal(r.status, 200, `Host ${host}`);
      assert.match(r.body, /SELECT secret FROM agent-shop/);
    }
    assert.equal((await get(port, '/healthz', { host: 'evil.example.com' })).status, 200, '/healthz stays open');
    const tunnel = await get(port, '/agent/tunnel', { host: 'evil.example.com', method: 'POST' });
    assert.equal(tunnel.status, 200, "the agents' tunnel is authenticated by its handshake, not by the Host");
    const stats = JSON.parse((await get(port, '/api/stats')).body) as { rejected: Record<string, number> };
    assert.equal(stats.rejected.protectedMode, 8 * 5);
    assert.match((await get(port, '/metrics')).body, /^apm_collector_rejected_total\{reason="protectedMode"\} 40$/m);
    assert.equal(c.logs('HTTP request refused').length, 1, 'logged once');
  });

  test('a token configured: /api/* without a token or with a wrong one is 401 ERR_UNAUTHORIZED, counted; the right one reads, under any Host; a revoked one no longer does', async () => {
    const dir = join(tmp.dir, 'tokens');
    seed(dir);
    const token = await createToken(dir);
    assert.match(token, /^apmr\.[0-9a-f]{8}\.[A-Za-z0-9_-]{43}$/);
    const c = await start(dir);
    const port = c.httpPort;
    const wrong = `${token.slice(0, -4)}${token.endsWith('AAAA') ? 'BBBB' : 'AAAA'}`;
    const refused = [{}, { token: wrong }, { token: 'x' }, { auth: `Basic ${Buffer.from(`u:${token}`).toString('base64')}` }, { auth: token }];
    for (const path of ['/api/traces', '/api/events', '/api/agents', '/api/stats', '/api/metrics']) {
      for (const o of refused) {
        const r = await get(port, path, o);
        assert.equal(r.status, 401, `${path} ${JSON.stringify(o)}`);
        assert.equal(errorCode(r), 'ERR_UNAUTHORIZED');
        assert.equal(r.headers['www-authenticate'], 'Bearer realm="apm-collector"');
        assert.doesNotMatch(r.body, /SELECT secret/);
      }
    }
    const ok = await get(port, '/api/traces', { token });
    assert.equal(ok.status, 200);
    assert.match(ok.body, /SELECT secret FROM agent-shop/);
    assert.equal((await get(port, '/api/traces', { token, host: 'collector.example.com' })).status, 200, 'a token works under any Host name');
    assert.equal((await get(port, '/', { host: 'collector.example.com' })).status, 200, 'the page itself holds no data');
    assert.equal((await get(port, '/healthz')).status, 200);
    const stats = JSON.parse((await get(port, '/api/stats', { token })).body) as { rejected: Record<string, number> };
    assert.equal(stats.rejected.unauthorized, 25);
    assert.match((await get(port, '/metrics')).body, /^apm_collector_rejected_total\{reason="unauthorized"\} 25$/m);

    // Another token is created while the collector runs, the first one revoked: both take effect at once.
    const second = await createToken(dir);
    assert.equal((await get(port, '/api/traces', { token: second })).status, 200);
    const id = token.split('.')[1] as string;
    const revoked = await runCollector(['tokens', 'revoke', id, '--data-dir', dir]);
    assert.equal(revoked.code, 0, revoked.stderr);
    assert.equal((await get(port, '/api/traces', { token })).status, 401, 'revocation takes effect on the next request');
    assert.equal((await get(port, '/api/traces', { token: second })).status, 200);
    assert.ok(!c.raw.join('\n').includes(token.split('.')[2] as string), 'the token is never logged');
  });

  test('a project-scoped token sees only its project in every API; /metrics needs a collector-wide token', async () => {
    const dir = join(tmp.dir, 'scoped');
    const { shop, bank } = seed(dir);
    const shopToken = await createToken(dir, 'shop');
    const bankToken = await createToken(dir, bank);
    const all = await createToken(dir);
    const c = await start(dir);
    const port = c.httpPort;
    const read = async (path: string, token: string) => {
      const r = await get(port, path, { token });
      assert.equal(r.status, 200, `${path}: ${r.body}`);
      return JSON.parse(r.body) as Record<string, unknown>[];
    };
    for (const [token, mine, theirs] of [
      [shopToken, 'agent-shop', 'agent-bank'],
      [bankToken, 'agent-bank', 'agent-shop'],
    ] as const) {
      assert.deepEqual(
        (await read('/api/agents', token)).map((a) => a.agentId),
        [mine],
      );
      assert.deepEqual(
        (await read('/api/traces', token)).map((t) => t.agentId),
        [mine],
      );
      assert.deepEqual(
        (await read('/api/events', token)).map((e) => e.agentId),
        [mine],
      );
      assert.deepEqual(
        (await read('/api/metrics', token)).map((m) => m.agentId),
        [mine],
      );
      for (const kind of ['traces', 'events', 'metrics'])
        assert.deepEqual(await read(`/api/${kind}?agent=${theirs}`, token), [], `${kind} of the other project`);
      const other = token === shopToken ? bank : shop;
      for (const kind of ['agents', 'traces', 'events', 'metrics']) {
        const r = await get(port, `/api/${kind}?project=${other}`, { token });
        assert.equal(r.status, 403, `${kind}?project= of the other project`);
        assert.equal(errorCode(r), 'ERR_TOKEN_SCOPE');
      }
      assert.deepEqual(
        (await read(`/api/agents?project=${token === shopToken ? shop : bank}`, token)).map((a) => a.agentId),
        [mine],
      );
      const stats = (await read('/api/stats', token)) as unknown as Record<string, unknown>;
      assert.deepEqual(stats, { project: token === shopToken ? shop : bank, agents: { live: 0, stalled: 0, disconnected: 1 } });
      const m = await get(port, '/metrics', { token, host: 'collector.example.com' });
      assert.equal(m.status, 403);
      assert.equal(errorCode(m), 'ERR_TOKEN_SCOPE');
    }
    assert.deepEqual((await read('/api/traces', all)).map((t) => t.agentId).sort(), ['agent-bank', 'agent-shop']);
    assert.equal((await get(port, '/metrics', { token: all, host: 'collector.example.com' })).status, 200);
    assert.equal((await get(port, '/metrics', { host: 'collector.example.com' })).status, 401, 'from a non-loopback name /metrics needs a token');

    const unknown = await runCollector(['tokens', 'create', '--project', 'nope', '--data-dir', dir]);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /ERR_UNKNOWN_PROJECT/);
  });

  test('--metrics-open: /metrics answers every client without a token; the API still needs one', async () => {
    const dir = join(tmp.dir, 'metrics-open');
    const token = await createToken(dir);
    const c = await start(dir, ['--metrics-open']);
    const m = await get(c.httpPort, '/metrics', { host: 'prometheus.example.com' });
    assert.equal(m.status, 200);
    assert.match(m.body, /^# TYPE apm_collector_rejected_total counter$/m);
    assert.equal((await get(c.httpPort, '/api/stats', { host: 'prometheus.example.com' })).status, 401);
    assert.equal((await get(c.httpPort, '/api/stats', { token, host: 'prometheus.example.com' })).status, 200);
  });

  test('--http on a non-loopback address without a read token refuses to start (exit 2) and says how to create one', async () => {
    const dir = join(tmp.dir, 'bind');
    for (const http of ['0.0.0.0:0', '[::]:0']) {
      const r = await runCollector(['run', '--port', '0', '--host', '127.0.0.1', '--http', http, '--data-dir', dir]);
      assert.equal(r.code, 2, `${http}: ${r.stderr}`);
      assert.match(r.stderr, /no read token is configured/);
      assert.match(r.stderr, /apm-collector tokens create/);
      assert.match(r.stderr, /ERR_NO_READ_TOKEN/);
    }
    // With a token it starts; revoking every token while it runs puts it in protected mode, where a
    // non-loopback peer is refused even when it sends a loopback Host name.
    const token = await createToken(dir);
    const c = await start(dir, ['--http', '0.0.0.0:0']);
    assert.equal(c.httpHost, '0.0.0.0');
    assert.equal((await get(c.httpPort, '/api/stats', { token })).status, 200);
    const revoked = await runCollector(['tokens', 'revoke', token.split('.')[1] as string, '--data-dir', dir]);
    assert.equal(revoked.code, 0, revoked.stderr);
    const ip = nonLoopbackIPv4();
    if (ip !== undefined) {
      const r = await get(c.httpPort, '/api/stats', { address: ip, host: 'localhost' });
      assert.equal(r.status, 403, `from ${ip}`);
      assert.equal(errorCode(r), 'ERR_PROTECTED_MODE');
    }
    assert.equal((await get(c.httpPort, '/api/stats')).status, 200, 'loopback still answered');
  });

  test('tokens list shows ids and projects, never a token; the database holds only a hash', async () => {
    const dir = join(tmp.dir, 'list');
    const { shop } = seed(dir);
    const token = await createToken(dir, shop);
    const secret = token.split('.')[2] as string;
    const list = await runCollector(['tokens', 'list', '--data-dir', dir]);
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, new RegExp(`^${token.split('.')[1]}\\s+${shop}\\s`, 'm'));
    assert.ok(!list.stdout.includes(secret));
    for (const f of readdirSync(dir)) assert.ok(!readFileSync(join(dir, f)).includes(secret), `${f} does not hold the token`);
    const json = JSON.parse((await runCollector(['tokens', 'list', '--json', '--data-dir', dir])).stdout) as Record<string, unknown>[];
    assert.deepEqual(Object.keys(json[0] ?? {}).sort(), ['createdAt', 'projectId', 'revokedAt', 'tokenId']);
    const bad = await runCollector(['tokens', 'revoke', 'ffffffff', '--data-dir', dir]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /ERR_UNKNOWN_TOKEN/);
  });
});
