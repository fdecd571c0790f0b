import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import http, { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import https from 'node:https';
import { join } from 'node:path';
import { after, afterEach, describe, it } from 'node:test';
import { type MetricsMessage, type ProfilePack, parseCorrelation } from '@apm-sidecar/proto';
import { type ApmClient, type HttpInstrumentationOptions, connect } from '@apm-sidecar/shim';
import { tempDir, waitFor } from '../helpers/procs';
import { FakeSidecar } from '../helpers/shim-fakes';

// The instrumented server runs in this process against a fake sidecar that
// pushes states: /front calls /echo on the same server (node:http, or fetch
// with ?via=fetch) and answers what /echo received; other paths answer what they received.

const tmp = tempDir('apm-http-states-');
after(() => tmp.cleanup());

let fake: FakeSidecar | null = null;
let apm: ApmClient | null = null;
let server: Server | null = null;
let n = 0;
let slowArrived = false;
afterEach(async () => {
  await apm?.close();
  await fake?.close();
  server?.closeAllConnections();
  server?.close();
  apm = null;
  fake = null;
  server = null;
});

type Received = Record<string, string | null>;

function received(req: IncomingMessage): Received {
  return { correlation: (req.headers['apm-correlation'] as string | undefined) ?? null, traceparent: (req.headers.traceparent as string | undefined) ?? null };
}

function callEcho(port: number, via: string | null): Promise<Received> {
  if (via === 'fetch') return fetch(`http://127.0.0.1:${port}/echo`).then((r) => r.json() as Promise<Received>);
  return new Promise((resolve, reject) => {
    http
      .get(`http://127.0.0.1:${port}/echo`, (res) => {
        let body = '';
        res.on('data', (d) => {
          body += d;
        });
        res.on('end', () => resolve(JSON.parse(body) as Received));
      })
      .on('error', reject);
  });
}

async function handle(req: IncomingMessage, res: ServerResponse, port: number): Promise<void> {
  const u = new URL(req.url ?? '/', 'http://x');
  if (u.pathname === '/slow') {
    slowArrived = true;
    return; // never answers: the client gives up
  }
  const body = u.pathname === '/front' ? await callEcho(port, u.searchParams.get('via')) : received(req);
  res.end(JSON.stringify(body));
}

async function setup(opts: HttpInstrumentationOptions | true = true): Promise<{ f: FakeSidecar; a: ApmClient; port: number }> {
  const f = await FakeSidecar.start(join(tmp.dir, `fake${++n}.sock`));
  fake = f;
  const a = connect({ socket: f.path, app: 'http-states', flushMs: 20, reconnectMinMs: 10, reconnectMaxMs: 100, instrumentHttp: opts });
  apm = a;
  await waitFor('the welcome', () => a.state === 'active');
  const s = createServer((req, res) => {
    handle(req, res, port).catch(() => res.destroy());
  });
  server = s;
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  return { f, a, port };
}

async function front(port: number, path: string, headers: Record<string, string> = {}): Promise<Received> {
  const r = await fetch(`http://127.0.0.1:${port}${path}`, { headers });
  return (await r.json()) as Received;
}

function traceNames(f: FakeSidecar): string[] {
  return f.of('Trace').map((x) => (x.msg.body as ProfilePack).name);
}

async function push(f: FakeSidecar, a: ApmClient, state: 'standby' | 'muted' | 'active'): Promise<void> {
  f.pushState(state, `test pushes ${state}`);
  await waitFor(`the shim to be ${state}`, () => a.state === state);
}

describe('HTTP instrumentation and the sidecar states', () => {
  it('standby: no request is detected, outgoing calls carry no txid and pass the caller’s traceparent on unchanged', async () => {
    const { f, a, port } = await setup();
    await push(f, a, 'standby');
    const tp = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    for (const via of ['http', 'fetch']) {
      const got = await front(port, `/front?via=${via}`, { traceparent: tp });
      assert.equal(got.traceparent, tp, via);
      assert.equal(got.correlation, null, via);
    }
    await push(f, a, 'active');
    await front(port, '/after-standby');
    await waitFor('the trace after standby', () => traceNames(f).includes('GET /after-standby'));
    assert.deepEqual(traceNames(f), ['GET /after-standby']);
  });

  it('muted: outgoing http and fetch calls carry notxdetect=true, also outside any request', async () => {
    const { f, a, port } = await setup();
    await push(f, a, 'muted');
    for (const via of ['http', 'fetch']) {
      const got = await front(port, `/front?via=${via}`);
      assert.equal(parseCorrelation(got.correlation ?? undefined).get('notxdetect'), 'true', via);
      assert.equal(parseCorrelation(got.correlation ?? undefined).get('txid'), undefined, via);
    }
    const direct = await callEcho(port, 'fetch');
    assert.equal(parseCorrelation(direct.correlation ?? undefined).get('notxdetect'), 'true');
    await push(f, a, 'active');
    const again = await front(port, '/front?via=http');
    assert.ok(parseCorrelation(again.correlation ?? undefined).get('txid'), 'detection resumes when active');
  });

  it('route(req) names transactions, and past maxRoutes distinct names new routes share METHOD (other)', async () => {
    const { f, port } = await setup({ maxRoutes: 3, outgoing: false, route: (req) => (req.url?.startsWith('/echo') ? '/echo-route' : undefined) });
    for (const p of ['/echo', '/a/1', '/b/2', '/c/3', '/d/4', '/a/5']) await front(port, p);
    await waitFor('six traces', () => traceNames(f).length === 6);
    assert.deepEqual(traceNames(f), ['GET /echo-route', 'GET /a/:id', 'GET /b/:id', 'GET (other)', 'GET (other)', 'GET /a/:id']);
  });

  it('a request the client abandons ends its transaction as an error with status class aborted', async () => {
    const { f, port } = await setup();
    const ac = new AbortController();
    const pending = fetch(`http://127.0.0.1:${port}/slow`, { signal: ac.signal }).catch(() => 'aborted');
    await waitFor('the request to arrive', () => slowArrived);
    ac.abort();
    assert.equal(await pending, 'aborted');
    await waitFor('the aborted trace', () => f.of('Trace').length === 1);
    const t = f.of('Trace')[0]?.msg.body as ProfilePack;
    assert.equal(t.name, 'GET /slow');
    assert.match(t.error ?? '', /^aborted/);
    await waitFor('the aborted status class', () =>
      f
        .of('Metrics')
        .flatMap((m) => (m.msg.body as MetricsMessage).points)
        .some((p) => p.series.name === 'http.server.requests' && p.series.tags.status === 'aborted'),
    );
  });

  it('node:https: an incoming https request is a transaction and an outgoing https call carries its headers', async () => {
    const { f } = await setup();
    const dir = join(tmp.dir, `tls${n}`);
    mkdirSync(dir);
    execFileSync(
      'openssl',
      ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=127.0.0.1', '-days', '1', '-keyout', join(dir, 'k.pem'), '-out', join(dir, 'c.pem')],
      {
        stdio: 'ignore',
      },
    );
    const tls = { key: readFileSync(join(dir, 'k.pem')), cert: readFileSync(join(dir, 'c.pem')) };
    const get = (port: number, path: string) =>
      new Promise<Received>((resolve, reject) => {
        https
          .get({ host: '127.0.0.1', port, path, rejectUnauthorized: false }, (res) => {
            let body = '';
            res.on('data', (d) => {
              body += d;
            });
            res.on('end', () => resolve(JSON.parse(body) as Received));
          })
          .on('error', reject);
      });
    const s = https.createServer(tls, (req, res) => {
      const p = req.url ?? '/';
      if (p.startsWith('/tls-front')) void get(port, '/tls-echo').then((r) => res.end(JSON.stringify(r)));
      else res.end(JSON.stringify(received(req)));
    });
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    const port = (s.address() as { port: number }).port;
    try {
      const got = await get(port, '/tls-front/7');
      const front = await waitFor('the https traces', () => {
        const t = f.of('Trace').map((x) => x.msg.body as ProfilePack);
        return t.length === 2 ? t.find((x) => x.name === 'GET /tls-front/:id') : undefined;
      });
      assert.equal(parseCorrelation(got.correlation ?? undefined).get('txid'), front.txid);
      assert.ok(got.traceparent?.includes(front.spanId), got.traceparent ?? 'no traceparent');
      assert.ok(front.steps.some((x) => x.type === 'http' && x.text.startsWith(`GET 127.0.0.1:${port}/tls-echo`)));
    } finally {
      s.closeAllConnections();
      s.close();
    }
  });

  it('close() undoes it: node:http is as it was and calls carry no headers', async () => {
    const original = { request: http.request, get: http.get };
    const { a, port } = await setup();
    await a.close();
    assert.equal(http.request, original.request);
    assert.equal(http.get, original.get);
    const got = await front(port, '/front?via=http');
    assert.deepEqual(got, { correlation: null, traceparent: null });
    assert.equal(a.instrumentHttp().stop(), undefined, 'instrumenting a closed client does nothing');
  });

  it('a wrapped http.get the app kept does nothing once instrumentation stopped (muted would add notxdetect)', async () => {
    const { f, a, port } = await setup();
    await push(f, a, 'muted');
    const kept = http.get;
    const viaKept = () =>
      new Promise<Received>((resolve, reject) => {
        kept(`http://127.0.0.1:${port}/echo`, (res) => {
          let body = '';
          res.on('data', (d) => {
            body += d;
          });
          res.on('end', () => resolve(JSON.parse(body) as Received));
        }).on('error', reject);
      });
    assert.equal(parseCorrelation((await viaKept()).correlation ?? undefined).get('notxdetect'), 'true', 'while instrumented');
    await a.close();
    assert.deepEqual(await viaKept(), { correlation: null, traceparent: null });
  });
});
