import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { parseCorrelation, parseTraceparent } from '@apm-sidecar/proto';
import { cleanupsAfterEach } from '../helpers/cleanups';
import { type CollectorProc, collectorPerSuite, getJson, tcpSidecar } from '../helpers/collector';
import { type Proc, startApp, statusJson, waitFor } from '../helpers/procs';

// Two instrumented HTTP services in their own processes, each with its own
// sidecar (agents svc-a and svc-b) reporting to one real collector.

interface Served {
  app: string;
  received: { correlation: string | null; traceparent: string | null };
  downstream: Served | null;
}
interface TraceRow {
  agentId: string;
  name: string;
  traceId: string;
  error: string | null;
  trace: { spanId: string; parentSpanId?: string; steps: { type: string; text: string }[] };
}

let collector: CollectorProc;
let key = '';
const suite = collectorPerSuite('http', [], (c, k) => {
  collector = c;
  key = k;
});
const cleanups = cleanupsAfterEach();

async function service(agent: string): Promise<{ app: Proc; port: number }> {
  const sc = await tcpSidecar(join(suite.dir, agent), collector, key, agent);
  cleanups.push(() => sc.kill('SIGTERM'));
  await waitFor(`${agent} active`, async () => (await statusJson(sc.socket)).state === 'active', 15000);
  const app = startApp('http-service', { APM_SIDECAR_SOCKET: sc.socket, APP: agent });
  cleanups.push(() => app.kill('SIGTERM'));
  const ready = await app.waitLine(`${agent} listening`, (l) => l.ready === true);
  await app.waitLine(`${agent} shim active`, (l) => l.state === 'active');
  return { app, port: ready.port as number };
}

async function get(port: number, path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: Served }> {
  const r = await fetch(`http://127.0.0.1:${port}${path}`, { headers });
  return { status: r.status, body: (await r.json()) as Served };
}

async function traces(agent: string): Promise<TraceRow[]> {
  const r = await getJson<TraceRow[]>(collector.httpPort, `/api/traces?agent=${agent}`, collector.httpHost);
  assert.equal(r.status, 200);
  return r.body;
}

const q = (next: string, via: 'http' | 'fetch') => `?via=${via}&next=${encodeURIComponent(next)}`;

describe('HTTP auto-instrumentation across two services', () => {
  test('a trace continues from A to B over node:http and from B back to A over fetch, each hop a named transaction at the collector', async () => {
    const a = await service('svc-a');
    const b = await service('svc-b');
    const leaf = `http://127.0.0.1:${a.port}/leaf/3`;
    const middle = `http://127.0.0.1:${b.port}/middle/2${q(leaf, 'fetch')}`;
    const r = await get(a.port, `/front/1${q(middle, 'http')}`);
    assert.equal(r.status, 200);

    // What crossed the wire: B got A's txid and traceparent over http, A's leaf got B's over fetch.
    const atB = r.body.downstream as Served;
    const atLeaf = atB.downstream as Served;
    for (const hop of [atB, atLeaf]) {
      assert.ok(parseCorrelation(hop.received.correlation ?? undefined).get('txid'), JSON.stringify(hop));
      assert.ok(parseTraceparent(hop.received.traceparent ?? undefined), JSON.stringify(hop));
    }
    assert.equal(r.body.received.traceparent, null, 'the first request came without a traceparent');

    const all = await waitFor(
      'the three transactions at the collector',
      async () => {
        const rows = [...(await traces('svc-a')), ...(await traces('svc-b'))];
        return rows.length >= 3 ? rows : null;
      },
      15000,
    );
    const byName = new Map(all.map((t) => [t.name, t]));
    const front = byName.get('GET /front/:id');
    const mid = byName.get('GET /middle/:id');
    const last = byName.get('GET /leaf/:id');
    assert.ok(front && mid && last, `names: ${[...byName.keys()].join(', ')}`);
    assert.equal(front.agentId, 'svc-a');
    assert.equal(mid.agentId, 'svc-b');
    assert.equal(last.agentId, 'svc-a');
    assert.equal(mid.traceId, front.traceId, 'B continues A’s trace');
    assert.equal(last.traceId, front.traceId, 'the leaf continues it again');
    assert.equal(mid.trace.parentSpanId, front.trace.spanId);
    assert.equal(last.trace.parentSpanId, mid.trace.spanId);
    assert.equal(parseTraceparent(atB.received.traceparent ?? undefined)?.parentId, front.trace.spanId);
    // The outgoing calls are steps of the calling transaction.
    assert.ok(
      front.trace.steps.some((s) => s.type === 'http' && s.text.startsWith(`GET 127.0.0.1:${b.port}/middle/2`)),
      JSON.stringify(front.trace.steps),
    );
    assert.ok(
      mid.trace.steps.some((s) => s.type === 'http' && s.text.includes(`/leaf/3`)),
      JSON.stringify(mid.trace.steps),
    );
  });

  test('latency, status class and errors are recorded per route: a 503 counts as an error, ids in paths share one name', async () => {
    const a = await service('svc-status');
    for (const id of [11, 12, 13]) assert.equal((await get(a.port, `/orders/${id}`)).status, 200);
    assert.equal((await get(a.port, '/orders/9f86d081884c7d65?status=503')).status, 503);

    const metric = async (name: string) => {
      const r = await getJson<{ name: string; tags: Record<string, string>; count: number; sum: number }[]>(
        collector.httpPort,
        `/api/metrics?agent=svc-status&name=${encodeURIComponent(name)}`,
        collector.httpHost,
      );
      return r.body;
    };
    await waitFor('the duration of 4 requests', async () => (await metric('apm.transaction.duration')).reduce((n, p) => n + p.count, 0) >= 4, 15000);
    const durations = await metric('apm.transaction.duration');
    assert.deepEqual([...new Set(durations.map((p) => p.tags.tx))], ['GET /orders/:id']);
    await waitFor('the error', async () => (await metric('apm.transaction.errors')).reduce((n, p) => n + p.sum, 0) === 1, 15000);
    await waitFor(
      'requests by status class',
      async () => {
        const byClass: Record<string, number> = {};
        for (const p of await metric('http.server.requests')) byClass[p.tags.status as string] = (byClass[p.tags.status as string] ?? 0) + p.sum;
        return byClass['2xx'] === 3 && byClass['5xx'] === 1;
      },
      15000,
    );
    const errTrace = (await traces('svc-status')).find((t) => t.error !== null);
    assert.equal(errTrace?.error, 'HTTP 503');
  });

  test('a request arriving with notxdetect=true is not detected, and the flag travels to B and back', async () => {
    const a = await service('svc-nx-a');
    const b = await service('svc-nx-b');
    const leaf = `http://127.0.0.1:${a.port}/nx-leaf/3`;
    const middle = `http://127.0.0.1:${b.port}/nx-middle/2${q(leaf, 'fetch')}`;
    const r = await get(a.port, `/nx-front/1${q(middle, 'http')}`, { 'apm-correlation': 'notxdetect=true' });
    assert.equal(r.status, 200);
    const atB = r.body.downstream as Served;
    assert.equal(parseCorrelation(atB.received.correlation ?? undefined).get('notxdetect'), 'true');
    assert.equal(parseCorrelation((atB.downstream as Served).received.correlation ?? undefined).get('notxdetect'), 'true');

    // A detected request afterwards reaches the collector; the undetected ones never do.
    assert.equal((await get(a.port, '/nx-after/1')).status, 200);
    await waitFor('the detected request', async () => (await traces('svc-nx-a')).some((t) => t.name === 'GET /nx-after/:id'), 15000);
    const names = [...(await traces('svc-nx-a')), ...(await traces('svc-nx-b'))].map((t) => t.name);
    assert.deepEqual(names, ['GET /nx-after/:id']);
  });
});
