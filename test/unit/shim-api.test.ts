import assert from 'node:assert/strict';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { type ApmClient, type ConnectOptions, connect } from '@apm-sidecar/shim';
import { tempDir, waitFor } from '../helpers/procs';
import { HUGE, abuse, abuseConnect } from '../helpers/shim-abuse';

// Every test here runs with the sidecar absent: the socket path names nothing.
const tmp = tempDir('apm-shim-api-');
// connect() without a socket option falls back to APM_SIDECAR_SOCKET: keep those clients
// away from the default path, where another test's sidecar may be listening.
process.env.APM_SIDECAR_SOCKET = join(tmp.dir, 'default-absent.sock');
const clients: ApmClient[] = [];
function absent(opts: ConnectOptions = {}): ApmClient {
  const apm = connect({ socket: join(tmp.dir, 'absent.sock'), reconnectMinMs: 10, reconnectMaxMs: 50, ...opts });
  clients.push(apm);
  return apm;
}
after(async () => {
  await Promise.all(clients.map((c) => c.close()));
  tmp.cleanup();
});

function cyclic(): unknown {
  const o: Record<string, unknown> = {};
  o.o = o;
  return o;
}

describe('shim API never throws into the app', () => {
  it('connect() with hostile options returns a client', async () => {
    assert.deepEqual(await abuseConnect(), []);
  });

  it('every API called with hostile arguments while the sidecar is absent neither throws nor rejects', async () => {
    const apm = absent();
    const r = abuse(apm);
    assert.deepEqual(r.threw, []);
    // Some flush() calls got huge timeouts; close() settles every pending flush.
    await apm.close();
    const results = await Promise.all(r.flushes);
    assert.ok(results.length > 0);
    for (const ok of results) assert.equal(typeof ok, 'boolean');
    const dropped = apm.stats().dropped;
    assert.ok((dropped.invalid ?? 0) > 0, `invalid input counted: ${JSON.stringify(dropped)}`);
    assert.ok((dropped.too_large ?? 0) > 0, `a 2 MiB snapshot counted as too_large: ${JSON.stringify(dropped)}`);
  });

  it('every API called after close() neither throws nor rejects, and close() is safe to call twice', async () => {
    const apm = absent();
    const first = apm.close();
    assert.equal(apm.close(), first, 'the second close() returns the same promise');
    await first;
    const r = abuse(apm);
    assert.deepEqual(r.threw, []);
    for (const ok of await Promise.all(r.flushes)) assert.equal(ok, false, 'flush after close resolves false');
    assert.ok((apm.stats().dropped.closed ?? 0) > 0, 'events after close are counted as closed');
    await apm.close();
  });

  it('counts bad input in stats().dropped by reason', async () => {
    const apm = absent({ maxSeries: 4 });
    // 1..8 invalid metric input; series c, g, h.
    apm.counter('').add(1);
    apm.counter('ok', { k: {} } as never).add(1);
    const c = apm.counter('c');
    c.add(Number.NaN);
    c.add(-1);
    c.add(Number.POSITIVE_INFINITY);
    c.add('5' as never);
    apm.gauge('g').set(Number.NaN);
    apm.histogram('h').record(Number.NEGATIVE_INFINITY);
    // Transactions: '' is invalid (9); 't' takes the 4th series for its duration.
    apm.startTransaction('').end();
    const tx = apm.startTransaction('t');
    for (let i = 0; i < 1000; i++) tx.step('sql', `q${i}`, 0);
    tx.step('sql', 'one too many', 0);
    tx.step('sql', 'bad duration', Number.NaN); // invalid 10
    tx.end();
    tx.step('sql', 'after end', 1); // closed 1
    // Past maxSeries.
    apm.counter('c4').add(1);
    apm.counter('c5').add(1);
    // A sum that would not be finite.
    c.add(1e308);
    c.add(1e308);
    apm.snapshot({ big: HUGE });
    apm.snapshot(cyclic()); // 11
    apm.snapshot(10n); // 12
    apm.snapshot(() => 1); // 13: would serialize to a snapshot without data
    apm.event(null as never); // 14
    apm.event({ type: 't' } as never); // 15
    apm.registerBusinessTransaction(''); // 16
    apm.registerBusinessTransaction('x'.repeat(1025)); // 17
    await apm.close();
    apm.event({ type: 't', message: 'm' });
    apm.snapshot({ a: 1 });
    apm.registerBusinessTransaction('POST /late');
    assert.deepEqual(apm.stats().dropped, { invalid: 17, too_many_steps: 1, closed: 4, series_limit: 2, overflow: 1, too_large: 1 });
  });

  it('a metric value that would overflow the sum is dropped without losing the handle', async () => {
    const apm = absent();
    const g = apm.gauge('g');
    g.set(1e308);
    g.set(1e308);
    g.set(5);
    const h = apm.histogram('h');
    h.record(-1e308);
    h.record(-1e308);
    assert.deepEqual(apm.stats().dropped, { overflow: 2 });
  });

  it('stats() reports state and what is buffered while the sidecar is away', async () => {
    const apm = absent();
    const s0 = apm.stats();
    assert.equal(s0.sent, 0);
    assert.equal(s0.acked, 0);
    assert.equal(s0.buffered, 0);
    assert.equal(s0.bufferedBytes, 0);
    assert.deepEqual(s0.dropped, {});
    await waitFor('the client to notice the sidecar is absent', () => apm.state === 'disconnected');
    apm.event({ type: 'deploy', message: 'v42' });
    apm.registerBusinessTransaction('POST /pay');
    const s1 = apm.stats();
    assert.equal(s1.state, 'disconnected');
    assert.equal(s1.buffered, 2);
    assert.ok(s1.bufferedBytes > 'v42POST /pay'.length);
    assert.equal(s1.sent, 0);
  });

  it('flush() without a sidecar resolves false once its timeout passes', async () => {
    const apm = absent();
    apm.counter('c').add(1);
    assert.equal(await apm.flush(50), false);
  });

  it('publishes state transitions on diagnostics_channel apm-sidecar:shim:state', async () => {
    const seen: { from: string; to: string; cause: string }[] = [];
    const onMessage = (m: unknown) => seen.push(m as { from: string; to: string; cause: string });
    subscribe('apm-sidecar:shim:state', onMessage);
    try {
      const apm = absent();
      await waitFor('a state transition', () => seen.length > 0);
      assert.equal(seen[0]?.from, 'connecting');
      assert.equal(seen[0]?.to, 'disconnected');
      assert.equal(typeof seen[0]?.cause, 'string');
      await apm.close();
    } finally {
      unsubscribe('apm-sidecar:shim:state', onMessage);
    }
  });
});

describe('shim buffer while the sidecar is away', () => {
  it('holds at most bufferBytes, dropping the oldest and counting buffer_full', async () => {
    const bound = 16 * 1024;
    const apm = absent({ bufferBytes: bound, flushMs: 3_600_000 });
    for (let round = 0; round < 40; round++) {
      for (let i = 0; i < 50; i++) apm.counter(`series.${i}`, { round: String(round % 3) }).add(i);
      void apm.flush(1);
      for (let i = 0; i < 20; i++) apm.event({ type: 'e', message: `round ${round} event ${i} ${'.'.repeat(200)}` });
      for (let i = 0; i < 5; i++) apm.registerBusinessTransaction(`bt ${round} ${i}`);
      const s = apm.stats();
      assert.ok(s.bufferedBytes <= bound, `round ${round}: ${s.bufferedBytes} bytes buffered, bound ${bound}`);
    }
    const s = apm.stats();
    assert.ok((s.dropped.buffer_full ?? 0) > 0, `dropped: ${JSON.stringify(s.dropped)}`);
    assert.ok(s.buffered > 0, 'the newest frames are kept');
    assert.ok(s.bufferedBytes > bound / 2, `the buffer is used, not emptied (${s.bufferedBytes})`);
  });

  it('a single frame larger than the whole budget is dropped and counted', () => {
    const apm = absent({ bufferBytes: 1024 });
    apm.event({ type: 'e', message: 'y'.repeat(4000) });
    assert.equal(apm.stats().bufferedBytes, 0);
    assert.equal(apm.stats().dropped.buffer_full, 1);
  });
});
