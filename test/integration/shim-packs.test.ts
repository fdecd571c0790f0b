import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { parseCorrelation, parseTraceparent } from '@apm-sidecar/proto';
import { type ApmClient, connect } from '@apm-sidecar/shim';
import { type SidecarProc, pointsOf, runCli, startSidecar, tempDir, waitFor } from '../helpers/procs';
import { abuse } from '../helpers/shim-abuse';

type Json = Record<string, unknown>;

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const PARENT = '00f067aa0ba902b7';

const tmp = tempDir('apm-shim-packs-');
let sidecar: SidecarProc;
let apm: ApmClient;
let markers = 0;

before(async () => {
  sidecar = await startSidecar(tmp.dir, ['--set', 'flush_ms=50', '--set', 'metric_interval_ms=200']);
  apm = connect({ socket: sidecar.socket, app: 'packs-test' });
  await waitFor('the shim to be welcomed', () => apm.state === 'active');
});
after(async () => {
  await apm?.close();
  await sidecar?.kill('SIGTERM');
  tmp.cleanup();
});

function traces(): Json[] {
  return sidecar.packs('trace').map((p) => p.trace as Json);
}

function ofKind(kind: string, pred: (p: Json) => boolean = () => true): Json[] {
  return sidecar.packs(kind).filter(pred);
}

/**
 * Send a marker trace and wait for it. Traces, events and snapshots travel one
 * socket in order, and queue2/queue1 are FIFO, so what was sent before the
 * marker is out once it is (used to check that something did NOT arrive).
 */
async function traceMarker(): Promise<void> {
  const name = `marker ${++markers}`;
  apm.startTransaction(name).end();
  await waitFor(name, () => traces().some((t) => t.name === name));
}

describe('shim packs arrive at a real sidecar', () => {
  it('a transaction with steps becomes one trace (ProfilePack) with its steps, error and origin', async () => {
    const tx = apm.startTransaction('POST /pay');
    tx.step('sql', 'SELECT * FROM orders WHERE id = ?', 3);
    tx.step('http', 'GET http://inventory/check', 2.5);
    tx.end({ error: new TypeError('card declined') });
    tx.end({ error: new Error('ending twice emits nothing') });
    const pack = await sidecar.waitLine('the trace', (l) => l.pack === 'trace' && (l.trace as Json).txid === tx.txid);
    assert.equal(pack.app, 'packs-test');
    assert.equal(pack.pid, process.pid);
    assert.equal(pack.instanceId, apm.instanceId);
    const t = pack.trace as Json;
    assert.equal(t.name, 'POST /pay');
    assert.equal(t.spanId, tx.txid);
    assert.match(t.traceId as string, /^[0-9a-f]{32}$/);
    assert.equal(t.parentSpanId, undefined);
    assert.equal(t.error, 'TypeError: card declined');
    assert.ok((t.durationMs as number) >= 0);
    assert.ok(typeof t.startTime === 'number' && Math.abs((t.startTime as number) - Date.now()) < 3_600_000);
    const steps = t.steps as Json[];
    assert.deepEqual(
      steps.map((s) => [s.type, s.text, s.durationMs]),
      [
        ['sql', 'SELECT * FROM orders WHERE id = ?', 3],
        ['http', 'GET http://inventory/check', 2.5],
      ],
    );
    for (const s of steps) assert.ok((s.offsetMs as number) >= 0);
    await traceMarker();
    assert.equal(traces().filter((x) => x.txid === tx.txid).length, 1, 'end() twice emits one trace');
  });

  it('a transaction records its duration histogram and error counter', async () => {
    const tx = apm.startTransaction('GET /metered');
    tx.end({ error: 'string error' });
    const ok = apm.startTransaction('GET /metered');
    ok.end();
    assert.equal(await apm.flush(), true);
    const dur = () => pointsOf(sidecar, 'apm.transaction.duration').filter((p) => (p.tags as Json).tx === 'GET /metered');
    const errs = () => pointsOf(sidecar, 'apm.transaction.errors').filter((p) => (p.tags as Json).tx === 'GET /metered');
    await waitFor('the duration and error points', () => dur().length > 0 && errs().length > 0);
    assert.equal(
      dur().reduce((a, p) => a + (p.count as number), 0),
      2,
    );
    assert.equal(
      errs().reduce((a, p) => a + (p.count as number), 0),
      1,
    );
  });

  it('a transaction name too long for a tag still gets its trace and a (truncated) duration series, with nothing dropped', async () => {
    const before = apm.stats().dropped.invalid ?? 0;
    const name = `GET /${'long/'.repeat(100)}`;
    const tx = apm.startTransaction(name);
    tx.end();
    const pack = await sidecar.waitLine('the long trace', (l) => l.pack === 'trace' && (l.trace as Json).txid === tx.txid);
    assert.equal((pack.trace as Json).name, name);
    assert.equal(apm.stats().dropped.invalid ?? 0, before);
    assert.equal(await apm.flush(), true);
    await waitFor('the duration point', () =>
      pointsOf(sidecar, 'apm.transaction.duration').some((p) => name.startsWith((p.tags as Json).tx as string) && ((p.tags as Json).tx as string).length > 20),
    );
  });

  it('an incoming traceparent continues the trace: same trace id, the caller as parent, headers for the next hop', async () => {
    const tx = apm.startTransaction('GET /downstream', { traceparent: `00-${TRACE}-${PARENT}-01`, 'apm-correlation': 'txid=caller' });
    const headers = tx.outgoingHeaders();
    assert.equal(headers.traceparent, `00-${TRACE}-${tx.txid}-01`);
    assert.equal(parseCorrelation(headers['apm-correlation']).get('txid'), tx.txid);
    tx.end();
    const t = (await sidecar.waitLine('the continued trace', (l) => l.pack === 'trace' && (l.trace as Json).txid === tx.txid)).trace as Json;
    assert.equal(t.traceId, TRACE);
    assert.equal(t.parentSpanId, PARENT);
    assert.equal(t.spanId, tx.txid);
  });

  it('a request with notxdetect=true emits no trace and passes the flag downstream', async () => {
    const tx = apm.startTransaction('GET /not-detected', { 'apm-correlation': 'notxdetect=true' });
    assert.equal(tx.detected, false);
    assert.equal(parseCorrelation(tx.outgoingHeaders()['apm-correlation']).get('notxdetect'), 'true');
    tx.step('sql', 'SELECT 1', 1);
    tx.end();
    await traceMarker();
    assert.deepEqual(
      traces().filter((t) => t.name === 'GET /not-detected'),
      [],
    );
    assert.equal(parseTraceparent(tx.outgoingHeaders().traceparent), undefined, 'no traceparent invented for an undetected request');
  });

  it('events arrive with their type, message and valid attributes', async () => {
    apm.event({ type: 'deploy', message: 'v42', attributes: { version: 42, canary: true, region: 'eu', bad: Number.NaN } });
    const p = await sidecar.waitLine('the event', (l) => l.pack === 'event' && (l.event as Json).message === 'v42');
    const e = p.event as Json;
    assert.equal(e.type, 'deploy');
    assert.deepEqual(e.attributes, { version: 42, canary: true, region: 'eu' });
    assert.equal(p.instanceId, apm.instanceId);
  });

  it('snapshots arrive with their kind and data', async () => {
    const data = { heapUsed: 1234, nested: { list: [1, 'two', null], flag: false } };
    apm.snapshot(data, 'runtime');
    const p = await sidecar.waitLine('the snapshot', (l) => l.pack === 'snapshot' && (l.snapshot as Json).kind === 'runtime');
    assert.deepEqual((p.snapshot as Json).data, data);
  });

  it('a snapshot whose data does not serialize is dropped as invalid and the connection survives', async () => {
    const before = apm.stats().dropped.invalid ?? 0;
    apm.snapshot(() => 1, 'fn');
    apm.snapshot(Symbol('s'), 'symbol');
    apm.snapshot({ toJSON: () => undefined }, 'tojson');
    apm.snapshot({ ok: 1 }, 'after');
    await sidecar.waitLine('the snapshot after the bad ones', (l) => l.pack === 'snapshot' && (l.snapshot as Json).kind === 'after');
    assert.equal(apm.stats().dropped.invalid ?? 0, before + 3);
    assert.deepEqual(
      ofKind('snapshot', (p) => ['fn', 'symbol', 'tojson'].includes((p.snapshot as Json).kind as string)),
      [],
    );
    assert.equal(sidecar.logs('closing IPC connection').length, 0);
  });

  it('active stacks of a running transaction arrive with cleaned frames', async () => {
    const tx = apm.startTransaction('GET /slow');
    apm.activeStack(tx, ['    at slow (app.js:10:5)', '', '    at Server.handle (server.js:3:1)  ']);
    apm.activeStack(tx, 'at a (a.js:1:1)\nat b (b.js:2:2)');
    tx.end();
    apm.activeStack(tx, ['at after.end (x.js:1:1)']);
    await traceMarker();
    const stacks = ofKind('activeStack', (p) => (p.stack as Json).txid === tx.txid).map((p) => p.stack as Json);
    assert.equal(stacks.length, 2, 'no stack after the transaction ended');
    assert.deepEqual(stacks[0]?.frames, ['at slow (app.js:10:5)', 'at Server.handle (server.js:3:1)']);
    assert.deepEqual(stacks[1]?.frames, ['at a (a.js:1:1)', 'at b (b.js:2:2)']);
    assert.equal(stacks[0]?.name, 'GET /slow');
    assert.ok((stacks[0]?.elapsedMs as number) >= 0);
  });

  it('business-transaction registrations arrive once per name', async () => {
    apm.registerBusinessTransaction('POST /checkout');
    apm.registerBusinessTransaction('POST /checkout');
    apm.registerBusinessTransaction('GET /cart');
    assert.equal(await apm.flush(), true, 'registrations are durable: acked by the sidecar');
    await sidecar.waitLine('the second registration', (l) => l.pack === 'btRegistration' && l.name === 'GET /cart');
    assert.equal(ofKind('btRegistration', (p) => p.name === 'POST /checkout').length, 1);
    apm.registerBusinessTransaction('POST /checkout');
    apm.registerBusinessTransaction('GET /marker');
    await sidecar.waitLine('the marker registration', (l) => l.pack === 'btRegistration' && l.name === 'GET /marker');
    assert.equal(ofKind('btRegistration', (p) => p.name === 'POST /checkout').length, 1);
  });

  it('hostile arguments from the app never make the sidecar reject a frame', async () => {
    const r = abuse(apm);
    assert.deepEqual(r.threw, []);
    await traceMarker();
    assert.equal(await apm.flush(), true);
    assert.equal(apm.state, 'active');
    assert.equal(sidecar.logs('closing IPC connection').length, 0, JSON.stringify(sidecar.logs('closing IPC connection')));
    assert.equal(sidecar.logs('shim connected').length, 1, 'the shim never had to reconnect');
    const status = await runCli(['status', '--json', '--socket', sidecar.socket]);
    assert.equal(status.code, 0, status.stderr);
    assert.deepEqual((JSON.parse(status.stdout) as { counters: { ipcErrors: Json } }).counters.ipcErrors, {});
    // Every flush settles (each one with its own timeout; acks make them true).
    for (const ok of await Promise.all(r.flushes)) assert.equal(typeof ok, 'boolean');
  });
});
