// Fuzzing the collector's HTTP port with real requests: random methods, paths, queries, headers
// and bodies against the JSON API, the page and /metrics, and random bodies and session ids
// against the agents' tunnel. Never a 5xx, never a crash; every refusal is JSON with a stable code.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { ClientHandshake } from '@apm-sidecar/proto/upstream';
import { parseAccessKey } from '@apm-sidecar/proto/upstream';
import nacl from 'tweetnacl';
import { type CollectorProc, createKey, createToken, getJson, startCollector } from '../helpers/collector';
import { RssWatch, byLevel, recordFigures, seed } from '../helpers/figures';
import { tempDir, waitFor } from '../helpers/procs';
import { RawAgent } from '../helpers/raw-agent';
import { httpRequest } from '../helpers/raw-http';

const FILE = 'faults/input-http-fuzz';
const RUNS = byLevel(800, 10_000, 100_000);
const TUNNEL_RUNS = byLevel(500, 10_000, 100_000);

const tmp = tempDir('apm-inhfz-');
let collector: CollectorProc;
let token: string;
let keyText: string;

before(async () => {
  const data = join(tmp.dir, 'collector');
  keyText = await createKey(data, 'fuzz');
  token = await createToken(data);
  collector = await startCollector(data);
  // Some stored data, so that queries reach rows.
  const agent = new RawAgent(collector.port, parseAccessKey(keyText), 'fuzz-agent');
  await waitFor('the license', () => agent.license !== null, 15_000);
  agent.sendPack('fuzz-1', Math.floor(Date.now() / 1000) * 1000, [1, 2, 3], 'fuzz.n');
  await waitFor('the ack', () => agent.acks.length > 0, 15_000);
  agent.destroy();
});

after(async () => {
  await collector?.kill('SIGTERM');
  tmp.cleanup();
});

/** Percent-encoded, raw and hostile text for paths and query values. */
const junk = fc.oneof(
  fc.string({ maxLength: 20 }),
  fc.string({ unit: 'binary', maxLength: 20 }).map((s) => encodeURIComponent(s)),
  fc.constantFrom(
    '%',
    '%zz',
    '%00',
    '%ff%fe',
    '..',
    '../../etc/passwd',
    '-1',
    '1e309',
    '9007199254740993',
    'NaN',
    '0x10',
    ' 1',
    '1m',
    '__proto__',
    "'; drop table x; --",
  ),
  fc.nat().map(String),
);
const routes = fc.constantFrom(
  '/api/agents',
  '/api/metrics',
  '/api/traces',
  '/api/events',
  '/api/stats',
  '/api',
  '/api/',
  '/healthz',
  '/metrics',
  '/',
  '/index.html',
  '/app.js',
  '/style.css',
  '/agent/tunnel',
  '/nope',
);
const pathArb = fc.oneof(
  { weight: 5, arbitrary: routes },
  fc.tuple(routes, junk).map(([r, j]) => `${r}/${j}`),
  fc.array(junk, { maxLength: 4 }).map((js) => `/${js.join('/')}`),
  fc.constantFrom('//api/agents', '/API/AGENTS', '/api/agents/', '/%2e%2e/', '*'),
);
const queryArb = fc
  .array(fc.tuple(fc.oneof(fc.constantFrom('project', 'agent', 'name', 'from', 'to', 'limit', 'rollup'), junk), junk), { maxLength: 5 })
  .map((kv) => (kv.length === 0 ? '' : `?${kv.map(([k, v]) => `${k}=${v}`).join('&')}`));
const headerName = fc.stringMatching(/^[a-zA-Z][a-zA-Z0-9-]{0,20}$/);
const headerValue = fc.stringMatching(/^[ -~]{0,60}$/);
const headersArb = fc.record(
  {
    authorization: fc.oneof(
      { weight: 6, arbitrary: fc.constant('TOKEN') },
      fc.constantFrom('Bearer', 'Bearer ', 'Basic Zm9vOmJhcg==', 'bearer x'),
      headerValue.map((v) => `Bearer ${v}`),
    ),
    host: fc.oneof(fc.constantFrom('127.0.0.1', 'localhost', 'evil.example', '127.0.0.1:1', '[::1]', ''), headerValue),
    'apm-tunnel-session': fc.oneof(headerValue, fc.constant('')),
    'content-type': fc.constantFrom('application/json', 'application/octet-stream', 'text/plain', ''),
    extra: fc.dictionary(headerName, headerValue, { maxKeys: 4 }),
  },
  { requiredKeys: ['host'] },
);
const bodyArb = fc.oneof(
  { weight: 4, arbitrary: fc.constant(undefined) },
  fc.uint8Array({ maxLength: 512 }).map((a) => Buffer.from(a)),
  fc.json().map((j) => Buffer.from(j)),
  fc.constantFrom(Buffer.alloc(70 * 1024, 0x61), Buffer.alloc(5000, 0)),
);
const requestArb = fc.record({
  method: fc.constantFrom('GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH', 'TRACE'),
  path: pathArb,
  query: queryArb,
  headers: headersArb,
  body: bodyArb,
});

describe('input attacks: fuzzing the collector over HTTP', () => {
  it('random requests to the API, the page, /metrics and the tunnel are never answered 5xx, and every refusal is JSON with a stable code', async () => {
    const s = seed();
    const statuses: Record<string, number> = {};
    const codes: Record<string, number> = {};
    const watch = new RssWatch(() => ({ collector: collector.pid }));
    const t0 = Date.now();
    await fc.assert(
      fc.asyncProperty(requestArb, async (r) => {
        const headers: Record<string, string> = { ...r.headers.extra };
        for (const k of ['authorization', 'host', 'apm-tunnel-session', 'content-type'] as const) {
          const v = r.headers[k];
          if (v !== undefined) headers[k] = v === 'Bearer TOKEN' || v === 'TOKEN' ? `Bearer ${token}` : v;
        }
        // node:http's client sends only bytes 0x21-0xff in a path; the rest go percent-encoded (garbage request lines are input-http's).
        const path = `${r.path}${r.query}`.replace(/[^\u0021-\u00ff]/g, (c) => encodeURIComponent(c));
        const res = await httpRequest(collector.httpPort, { method: r.method, path, headers, body: r.body });
        statuses[res.status] = (statuses[res.status] ?? 0) + 1;
        assert.ok(res.status < 500, `${r.method} ${path} → ${res.status}: ${res.body.slice(0, 300)}`);
        if (res.status >= 400 && r.method !== 'HEAD') {
          const parsed = JSON.parse(res.body) as { error: { code: string } };
          assert.match(parsed.error.code, /^ERR_[A-Z_]+$/);
          codes[parsed.error.code] = (codes[parsed.error.code] ?? 0) + 1;
        }
      }),
      { numRuns: RUNS, seed: s },
    );
    const ms = Date.now() - t0;
    // The collector still serves: the health check and an authenticated read.
    const health = await getJson(collector.httpPort, '/api/stats', { token });
    const maxRssMb = watch.stop();
    recordFigures(
      FILE,
      {
        case: 'input/fuzz-collector-http',
        section: 'input',
        load: 'one stored agent with data',
        fault: 'random methods, paths, queries, headers (tokens, hosts, tunnel session ids) and bodies, one connection each',
        lost: 0,
        duplicated: 0,
        maxRssMb,
        recoverMs: null,
        extra: { cases: RUNS, seed: s, ms, statuses: JSON.stringify(statuses), codes: JSON.stringify(codes) },
      },
      s,
    );
    assert.equal(health.status, 200);
    assert.ok(collector.alive);
  });

  it('random and mutated tunnel bodies, with and without a session id, are refused with a typed answer, never 5xx', async () => {
    const s = seed();
    const statuses: Record<string, number> = {};
    const key = parseAccessKey(keyText);
    const genuineHello = () => new ClientHandshake(nacl, key, 'tunnel-fuzz').hello();
    const body = fc.oneof(
      fc.uint8Array({ maxLength: 600 }).map((a) => Buffer.from(a)),
      fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })).map(([at, x]) => {
        const h = genuineHello();
        const i = at % h.length;
        h[i] = (h[i] as number) ^ x;
        return h;
      }),
      fc.constantFrom(Buffer.alloc(0), Buffer.alloc(5000, 0x20)),
    );
    const watch = new RssWatch(() => ({ collector: collector.pid }));
    const t0 = Date.now();
    await fc.assert(
      fc.asyncProperty(body, fc.option(fc.stringMatching(/^[A-Za-z0-9_-]{0,30}$/), { nil: undefined }), async (b, sid) => {
        const headers: Record<string, string> = { 'content-type': 'application/octet-stream' };
        if (sid !== undefined) headers['apm-tunnel-session'] = sid;
        const res = await httpRequest(collector.httpPort, { method: 'POST', path: '/agent/tunnel', headers, body: b });
        statuses[res.status] = (statuses[res.status] ?? 0) + 1;
        assert.ok([200, 408, 410, 413].includes(res.status), `tunnel → ${res.status}: ${res.body.slice(0, 200)}`);
      }),
      { numRuns: TUNNEL_RUNS, seed: s },
    );
    const ms = Date.now() - t0;
    const maxRssMb = watch.stop();
    const stats = (await getJson(collector.httpPort, '/api/stats', { token })).body;
    recordFigures(
      FILE,
      {
        case: 'input/fuzz-tunnel',
        section: 'input',
        load: 'none',
        fault: 'random bytes, ClientHellos with one byte changed, empty and oversized bodies, random session ids',
        lost: 0,
        duplicated: 0,
        maxRssMb,
        recoverMs: null,
        extra: {
          cases: TUNNEL_RUNS,
          seed: s,
          ms,
          statuses: JSON.stringify(statuses),
          rejected: JSON.stringify(stats.rejected),
          sessionsHttp: stats.sessions.http,
        },
      },
      s,
    );
    assert.ok(collector.alive);
    assert.equal(stats.sessions.http, 0, 'no tunnel session was opened by a forged hello');
  });
});
