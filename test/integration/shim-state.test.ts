import assert from 'node:assert/strict';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { join } from 'node:path';
import { after, afterEach, describe, it } from 'node:test';
import { type EventPack, type MetricsMessage, type ProfilePack, type SidecarState, parseCorrelation } from '@apm-sidecar/proto';
import { type ApmClient, type ShimState, connect } from '@apm-sidecar/shim';
import { tempDir, waitFor } from '../helpers/procs';
import { FakeSidecar } from '../helpers/shim-fakes';

const tmp = tempDir('apm-shim-state-');
after(() => tmp.cleanup());

let fake: FakeSidecar | null = null;
let apm: ApmClient | null = null;
let n = 0;
afterEach(async () => {
  await apm?.close();
  await fake?.close();
  apm = null;
  fake = null;
});

async function setup(welcomeState: SidecarState = 'active'): Promise<{ fake: FakeSidecar; apm: ApmClient }> {
  fake = await FakeSidecar.start(join(tmp.dir, `fake${++n}.sock`), (f) => {
    f.state = welcomeState;
  });
  apm = connect({ socket: fake.path, app: 'state-test', reconnectMinMs: 10, reconnectMaxMs: 100 });
  await waitFor('the welcome', () => fake?.shims.length === 1 && apm?.state !== 'connecting');
  return { fake, apm };
}

async function push(f: FakeSidecar, a: ApmClient, state: SidecarState, expect: ShimState): Promise<void> {
  f.pushState(state, `test pushes ${state}`);
  await waitFor(`the shim to be ${expect}`, () => a.state === expect);
}

function traceNames(f: FakeSidecar): string[] {
  return f.of('Trace').map((x) => (x.msg.body as ProfilePack).name);
}
function eventMessages(f: FakeSidecar): string[] {
  return f.of('Event').map((x) => (x.msg.body as EventPack).message);
}
function counterSum(f: FakeSidecar, name: string): number {
  let s = 0;
  for (const fr of f.of('Metrics')) for (const p of (fr.msg.body as MetricsMessage).points) if (p.series.name === name) s += p.sum;
  return s;
}

describe('state pushed by the sidecar', () => {
  it('standby: startTransaction returns a no-op (detected=false) while metrics are still recorded and sent', async () => {
    const { fake: f, apm: a } = await setup();
    assert.equal(a.state, 'active');
    const startedActive = a.startTransaction('GET /started-before-standby');
    await push(f, a, 'standby', 'standby');

    const tx = a.startTransaction('GET /in-standby', { traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' });
    assert.equal(tx.detected, false);
    assert.equal(tx.txid, '');
    assert.equal(parseCorrelation(tx.outgoingHeaders()['apm-correlation']).get('notxdetect'), undefined, 'standby does not ask downstream to stop detecting');
    tx.step('sql', 'SELECT 1', 1);
    tx.end();
    startedActive.end();
    a.activeStack(a.startTransaction('GET /stack'), ['at x (x.js:1:1)']);

    a.counter('standby.count').add(7);
    a.histogram('standby.hist').record(3);
    assert.equal(await a.flush(), true, 'metrics are sent and acked in standby');
    assert.equal(counterSum(f, 'standby.count'), 7);

    // Back to active: a trace is produced again. Everything sent in standby came before it on the same socket.
    await push(f, a, 'active', 'active');
    const back = a.startTransaction('GET /active-again');
    assert.equal(back.detected, true);
    back.end();
    await waitFor('the trace after standby', () => traceNames(f).includes('GET /active-again'));
    assert.deepEqual(traceNames(f), ['GET /active-again'], 'no trace was produced in standby');
    assert.equal(f.of('ActiveStack').length, 0);
  });

  it('muted: outgoing calls carry notxdetect=true, events and snapshots are not produced (dropped as muted), metrics still flow', async () => {
    const { fake: f, apm: a } = await setup();
    await push(f, a, 'muted', 'muted');

    const tx = a.startTransaction('GET /muted', { 'apm-correlation': 'txid=caller' });
    assert.equal(tx.detected, false);
    const c = parseCorrelation(tx.outgoingHeaders()['apm-correlation']);
    assert.equal(c.get('notxdetect'), 'true');
    assert.equal(c.get('txid'), 'caller');
    assert.equal(parseCorrelation(a.startTransaction('GET /muted-no-headers').outgoingHeaders()['apm-correlation']).get('notxdetect'), 'true');
    tx.end();

    a.event({ type: 'deploy', message: 'during mute' });
    a.snapshot({ during: 'mute' });
    assert.equal(a.stats().dropped.muted, 2);

    a.counter('muted.count').add(5);
    // Interceptors are unproductive when muted: no new business transaction is registered.
    a.registerBusinessTransaction('GET /registered-while-muted');
    assert.equal(a.stats().dropped.muted, 3);
    assert.equal(await a.flush(), true, 'metrics are kept in muted');
    assert.equal(counterSum(f, 'muted.count'), 5);
    assert.equal(f.of('BtRegistration').length, 0);

    await push(f, a, 'active', 'active');
    a.event({ type: 'deploy', message: 'after mute' });
    await waitFor('the event after mute', () => eventMessages(f).includes('after mute'));
    assert.deepEqual(eventMessages(f), ['after mute']);
    assert.equal(f.of('Snapshot').length, 0);
    assert.deepEqual(traceNames(f), []);
    assert.equal(a.startTransaction('GET /x').detected, true);
  });

  it('stopped is treated as muted, reconnecting and connecting as active', async () => {
    const { fake: f, apm: a } = await setup();
    await push(f, a, 'stopped', 'muted');
    await push(f, a, 'reconnecting', 'active');
    await push(f, a, 'standby', 'standby');
    await push(f, a, 'connecting', 'active');
  });

  it('the state in the welcome applies at once: a shim joining a sidecar in standby does not detect', async () => {
    const { apm: a } = await setup('standby');
    assert.equal(a.state, 'standby');
    assert.equal(a.startTransaction('GET /joined').detected, false);
  });

  it('the state in the welcome applies at once: a shim joining a muted sidecar marks outgoing calls', async () => {
    const { apm: a } = await setup('muted');
    assert.equal(a.state, 'muted');
    assert.equal(parseCorrelation(a.startTransaction('GET /joined').outgoingHeaders()['apm-correlation']).get('notxdetect'), 'true');
  });

  it('each transition is published once on diagnostics_channel with from, to and cause', async () => {
    const seen: { from: string; to: string; cause: string }[] = [];
    const listener = (m: unknown) => seen.push(m as { from: string; to: string; cause: string });
    subscribe('apm-sidecar:shim:state', listener);
    try {
      const { fake: f, apm: a } = await setup();
      await push(f, a, 'standby', 'standby');
      f.pushState('reconnecting'); // standby → active
      await push(f, a, 'muted', 'muted');
      f.pushState('muted'); // no change: nothing published
      f.cut();
      await waitFor('the shim to see the sidecar gone', () => a.state === 'disconnected' || seen.some((s) => s.to === 'disconnected'));
      const pairs = seen.map((s) => `${s.from}→${s.to}`);
      assert.deepEqual(pairs.slice(0, 5), ['connecting→active', 'active→standby', 'standby→active', 'active→muted', 'muted→disconnected']);
      assert.equal(seen[0]?.cause, 'welcome');
      assert.equal(seen[1]?.cause, 'test pushes standby');
    } finally {
      unsubscribe('apm-sidecar:shim:state', listener);
    }
  });

  it('after the sidecar goes away and comes back, the welcome state replaces the pushed one', async () => {
    const { fake: f, apm: a } = await setup();
    await push(f, a, 'muted', 'muted');
    f.state = 'active';
    f.cut();
    await waitFor('a new connection', () => f.shims.length === 2 && a.state === 'active');
    assert.equal(a.startTransaction('GET /after-return').detected, true);
  });
});
