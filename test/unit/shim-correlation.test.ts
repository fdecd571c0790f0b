import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { parseCorrelation, parseTraceparent } from '@apm-sidecar/proto';
import { type ApmClient, connect } from '@apm-sidecar/shim';
import { tempDir } from '../helpers/procs';

// No sidecar: the client stays 'connecting'/'disconnected', where transactions are detected.
const tmp = tempDir('apm-shim-corr-');
const clients: ApmClient[] = [];
function client(): ApmClient {
  const apm = connect({ socket: join(tmp.dir, 'absent.sock'), app: 'corr' });
  clients.push(apm);
  return apm;
}
after(async () => {
  await Promise.all(clients.map((c) => c.close()));
  tmp.cleanup();
});

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const PARENT = '00f067aa0ba902b7';
const HEX32 = /^[0-9a-f]{32}$/;
const HEX16 = /^[0-9a-f]{16}$/;

describe('shim correlation headers', () => {
  it('a new transaction sends apm-correlation txid=… and a W3C traceparent naming its own span', () => {
    const tx = client().startTransaction('GET /a');
    assert.equal(tx.detected, true);
    assert.match(tx.txid, HEX16);
    const h = tx.outgoingHeaders();
    assert.deepEqual(Object.keys(h).sort(), ['apm-correlation', 'traceparent']);
    assert.equal(parseCorrelation(h['apm-correlation']).get('txid'), tx.txid);
    assert.equal(parseCorrelation(h['apm-correlation']).get('notxdetect'), undefined);
    const tp = parseTraceparent(h.traceparent);
    assert.ok(tp, `traceparent ${h.traceparent} does not parse`);
    assert.match(tp.traceId, HEX32);
    assert.equal(tp.parentId, tx.txid);
    assert.equal(tp.flags, '01');
    tx.end();
  });

  it('two transactions get different trace ids and span ids', () => {
    const apm = client();
    const a = parseTraceparent(apm.startTransaction('a').outgoingHeaders().traceparent);
    const b = parseTraceparent(apm.startTransaction('b').outgoingHeaders().traceparent);
    assert.ok(a && b);
    assert.notEqual(a.traceId, b.traceId);
    assert.notEqual(a.parentId, b.parentId);
  });

  it('an incoming traceparent continues the trace id with a new span id', () => {
    const tx = client().startTransaction('GET /b', { traceparent: `00-${TRACE}-${PARENT}-01` });
    assert.equal(tx.detected, true);
    const tp = parseTraceparent(tx.outgoingHeaders().traceparent);
    assert.ok(tp);
    assert.equal(tp.traceId, TRACE);
    assert.notEqual(tp.parentId, PARENT);
    assert.equal(tp.parentId, tx.txid);
  });

  it('reads headers from a fetch Headers object and from array values', () => {
    const apm = client();
    const viaHeaders = apm.startTransaction('h', new Headers({ traceparent: `00-${TRACE}-${PARENT}-01` }));
    assert.equal(parseTraceparent(viaHeaders.outgoingHeaders().traceparent)?.traceId, TRACE);
    const viaArray = apm.startTransaction('a', { traceparent: [`00-${TRACE}-${PARENT}-01`, 'ignored'] });
    assert.equal(parseTraceparent(viaArray.outgoingHeaders().traceparent)?.traceId, TRACE);
  });

  it('an invalid incoming traceparent starts a new trace', () => {
    const apm = client();
    for (const bad of ['garbage', `00-${'0'.repeat(32)}-${PARENT}-01`, `ff-${TRACE}-${PARENT}-01`, `00-${TRACE.toUpperCase()}-${PARENT}-01`]) {
      const tp = parseTraceparent(apm.startTransaction('x', { traceparent: bad }).outgoingHeaders().traceparent);
      assert.ok(tp);
      assert.notEqual(tp.traceId, TRACE, `continued from ${bad}`);
      assert.notEqual(tp.traceId, '0'.repeat(32));
    }
  });

  it('notxdetect=true on the incoming request gives a no-op transaction that passes the flag downstream', () => {
    const apm = client();
    const before = apm.stats().buffered;
    const tx = apm.startTransaction('GET /skip', { 'apm-correlation': 'txid=upstream1;notxdetect=true', traceparent: `00-${TRACE}-${PARENT}-01` });
    assert.equal(tx.detected, false);
    assert.equal(tx.txid, '');
    const h = tx.outgoingHeaders();
    const c = parseCorrelation(h['apm-correlation']);
    assert.equal(c.get('notxdetect'), 'true');
    assert.equal(c.get('txid'), 'upstream1', 'the caller’s other pairs pass through');
    assert.equal(h.traceparent, `00-${TRACE}-${PARENT}-01`, 'the caller’s traceparent passes through unchanged');
    tx.step('sql', 'SELECT 1', 1);
    tx.end({ error: new Error('x') });
    // A detected transaction would have queued a trace frame (the sidecar is absent).
    assert.equal(apm.stats().buffered, before, 'the no-op transaction emitted nothing');
    const control = apm.startTransaction('GET /detected');
    control.end();
    assert.equal(apm.stats().buffered, before + 1, 'a detected transaction queues its trace');
  });

  it('headers of a no-op transaction are a fresh copy each time', () => {
    const tx = client().startTransaction('x', { 'apm-correlation': 'notxdetect=true' });
    const h1 = tx.outgoingHeaders();
    h1['apm-correlation'] = 'tampered';
    assert.equal(parseCorrelation(tx.outgoingHeaders()['apm-correlation']).get('notxdetect'), 'true');
  });

  it('notxdetect with another value, or in another header, does not suppress detection', () => {
    const apm = client();
    assert.equal(apm.startTransaction('x', { 'apm-correlation': 'notxdetect=false' }).detected, true);
    assert.equal(apm.startTransaction('x', { 'apm-correlation': 'txid=1' }).detected, true);
    assert.equal(apm.startTransaction('x', { 'x-other': 'notxdetect=true' }).detected, true);
  });
});
