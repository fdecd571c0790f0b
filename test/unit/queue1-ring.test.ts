import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Pack } from '@apm-sidecar/sidecar';
import { EventRing } from '@apm-sidecar/sidecar/dist/event-ring';
import { Queue1, type SpillStore } from '@apm-sidecar/sidecar/dist/queue1';

const origin = { app: 'a', instanceId: 'i', pid: 1 };
const metrics = (id: string, intervalStart = 0): Pack => ({ kind: 'metrics', packId: id, intervalStart, intervalMs: 1000, points: 0, body: Buffer.alloc(0) });
const event = (message: string): Pack => ({ kind: 'event', origin, event: { ts: 0, type: 't', message } });
const snapshot = (kind: string): Pack => ({ kind: 'snapshot', origin, snapshot: { ts: 0, kind, data: {} } });
const bt = (name: string): Pack => ({ kind: 'btRegistration', origin, name, ts: 0 });

function label(p: Pack | undefined): string {
  if (p === undefined) return '-';
  switch (p.kind) {
    case 'metrics':
      return p.packId;
    case 'event':
      return p.event.message;
    case 'snapshot':
      return p.snapshot.kind;
    case 'btRegistration':
      return p.name;
    default:
      return p.kind;
  }
}

function drain(q: Queue1): string[] {
  const out: string[] = [];
  for (let p = q.shift(); p !== undefined; p = q.shift()) out.push(label(p));
  return out;
}

describe('Queue1', () => {
  test('drains registrations, then metrics, then events and snapshots, whatever the push order', () => {
    const q = new Queue1(100, () => assert.fail('nothing is dropped'));
    q.push(event('e1'));
    q.push(metrics('m1'));
    q.push(bt('b1'));
    q.push(snapshot('s1'));
    q.push(metrics('m2'));
    q.push(bt('b2'));
    q.push(event('e2'));
    assert.equal(q.depth, 7);
    assert.deepEqual(q.laneDepths(), { bt: 2, metrics: 2, events: 3 });
    assert.deepEqual(drain(q), ['b1', 'b2', 'm1', 'm2', 'e1', 's1', 'e2']);
    assert.equal(q.depth, 0);
  });

  test('a pack that failed to send goes back to the head of its own lane', () => {
    const q = new Queue1(100, () => {});
    q.push(bt('b1'));
    q.push(metrics('m1'));
    q.push(metrics('m2'));
    q.push(event('e1'));
    const first = q.shift();
    const second = q.shift();
    assert.deepEqual([label(first), label(second)], ['b1', 'm1']);
    // Put back newest first, as the transport does.
    q.unshift(second as Pack);
    q.unshift(first as Pack);
    assert.deepEqual(drain(q), ['b1', 'm1', 'm2', 'e1']);
  });

  test('when full, the oldest event goes first, then the oldest metric pack; an event never displaces a metric pack; registrations are never dropped', () => {
    const dropped: string[] = [];
    const q = new Queue1(3, (p, reason) => {
      assert.equal(reason, 'queue1_full');
      dropped.push(label(p));
    });
    q.push(metrics('m1'));
    q.push(event('e1'));
    q.push(metrics('m2'));
    q.push(event('e2')); // full: the oldest event goes
    assert.deepEqual(dropped, ['e1']);
    q.push(metrics('m3')); // the oldest event again (e2), not a metric
    assert.deepEqual(dropped, ['e1', 'e2']);
    q.push(snapshot('s1')); // no event left to drop: the incoming snapshot goes, the metrics stay
    assert.deepEqual(dropped, ['e1', 'e2', 's1']);
    q.push(metrics('m4')); // a metric pack may displace the oldest metric pack
    assert.deepEqual(dropped, ['e1', 'e2', 's1', 'm1']);
    q.push(bt('b1')); // registrations are always taken, past the capacity
    q.push(bt('b2'));
    assert.equal(q.depth, 5);
    assert.equal(q.dropped, 4);
    assert.deepEqual(drain(q), ['b1', 'b2', 'm2', 'm3', 'm4']);
  });

  test('a full queue1 drops no retained metric pack: it stays in the retention and is loaded back oldest first as the queue drains', () => {
    // The retention, as queue1 sees it: every metric pack is in it until acked.
    const retained: Pack[] = [];
    let holds = true;
    const store: SpillStore = {
      holds: () => holds,
      load: (limit, skip) => retained.filter((p) => p.kind === 'metrics' && !skip(p.packId)).slice(0, limit),
    };
    const episodes: [string, number][] = [];
    store.episode = (phase, packs) => episodes.push([phase, packs]);
    const lost: string[] = [];
    const q = new Queue1(3, (p) => lost.push(label(p)), undefined, store);
    const emit = (id: string) => {
      const p = metrics(id);
      retained.push(p);
      q.push(p);
    };
    for (let i = 1; i <= 8; i++) emit(`m${i}`);
    q.push(event('e1')); // an event finds no room: it goes, the metric packs stay
    assert.equal(q.depth, 3, 'memory holds capacity packs');
    assert.equal(q.spilled, true);
    assert.deepEqual(lost, ['e1'], 'only the event was dropped');
    // One pack is with the transport (not in memory, still retained): not loaded twice.
    const sending = q.shift() as Pack;
    assert.equal(label(sending), 'm1');
    q.isSending = (id) => id === 'm1';
    const out: string[] = [];
    for (let p = q.shift(); p !== undefined; p = q.shift()) {
      out.push(label(p));
      retained.splice(retained.indexOf(p), 1); // acked: no longer retained
      if (out.length === 3) emit('m9'); // a pack emitted while spilled queues behind the spilled ones
    }
    assert.deepEqual(out, ['m2', 'm3', 'm4', 'm5', 'm6', 'm7', 'm8', 'm9']);
    assert.equal(q.spilled, false, 'the spill ends once the retention has nothing more');
    assert.equal(q.spills, 6);
    assert.deepEqual(
      episodes,
      [
        ['start', 0],
        ['end', 6],
      ],
      'told once when it started and once, with the total, when it ended',
    );

    holds = false; // a retention that cannot take writes holds nothing: the oldest metric pack is dropped
    const dropped: string[] = [];
    const q2 = new Queue1(2, (p) => dropped.push(label(p)), undefined, store);
    for (const id of ['n1', 'n2', 'n3']) q2.push(metrics(id));
    assert.deepEqual(dropped, ['n1']);
  });

  test('while spilled, the metrics lane never empties with packs waiting in the retention: expiry and drops for space top it up', () => {
    const retained: Pack[] = [];
    const store: SpillStore = {
      holds: () => true,
      load: (limit, skip) => retained.filter((p) => p.kind === 'metrics' && !skip(p.packId)).slice(0, limit),
    };
    const q = new Queue1(2, () => assert.fail('nothing is dropped'), undefined, store);
    for (let i = 1; i <= 6; i++) {
      const p = metrics(`m${i}`, i * 1000);
      retained.push(p);
      q.push(p);
    }
    assert.equal(q.depth, 2);
    // The retention purges what is past retention_ms first, then queue1 expires its own.
    retained.splice(0, 2);
    assert.deepEqual(q.expireMetrics(3000).map(label), ['m1', 'm2']);
    assert.equal(q.depth, 2, 'topped up from the retention: the sender still sees packs');
    retained.splice(0, 2); // dropped for space
    q.removeMetricPacks((p) => p.packId === 'm3' || p.packId === 'm4');
    const out: string[] = [];
    for (let p = q.shift(); p !== undefined; p = q.shift()) {
      out.push(label(p));
      retained.splice(retained.indexOf(p), 1); // sent and acked
    }
    assert.deepEqual(out, ['m5', 'm6']);
    assert.equal(q.spilled, false);
  });

  test('a queue full of registrations drops the incoming pack, never a registration', () => {
    const dropped: string[] = [];
    const q = new Queue1(2, (p) => dropped.push(label(p)));
    q.push(bt('b1'));
    q.push(bt('b2'));
    q.push(metrics('m1'));
    q.push(event('e1'));
    assert.deepEqual(dropped, ['m1', 'e1']);
    assert.deepEqual(drain(q), ['b1', 'b2']);
  });

  test('a drop episode is reported once when it starts and once, with the total, when the queue has drained to half', () => {
    const episodes: [string, number][] = [];
    const q = new Queue1(
      4,
      () => {},
      (phase, total) => episodes.push([phase, total]),
    );
    for (let i = 0; i < 7; i++) q.push(metrics(`m${i}`));
    assert.deepEqual(episodes, [['start', 0]]);
    q.shift();
    q.shift();
    q.shift();
    q.push(metrics('m7')); // depth 1 ≤ 4/2 before the push: the episode ends
    assert.deepEqual(episodes, [
      ['start', 0],
      ['end', 3],
    ]);
  });

  test('expireMetrics removes the metric packs of intervals before the cutoff and returns them', () => {
    const q = new Queue1(100, () => {});
    q.push(metrics('old1', 1000));
    q.push(metrics('new1', 5000));
    q.push(metrics('old2', 2000));
    q.push(metrics('edge', 3000));
    q.push(event('e1'));
    q.push(bt('b1'));
    const gone = q.expireMetrics(3000);
    assert.deepEqual(gone.map(label), ['old1', 'old2']);
    assert.deepEqual(drain(q), ['b1', 'new1', 'edge', 'e1'], 'an interval starting at the cutoff is kept; other lanes are untouched');
    assert.equal(q.dropped, 0, 'expiry is counted by the owner (retention_expired), not as queue1_full');
  });
});

describe('EventRing', () => {
  test('keeps the events of the last windowMs; older ones are dropped and counted as event_window', () => {
    const drops: [number, string][] = [];
    const ring = new EventRing(1000, 100, (n, reason) => drops.push([n, reason]));
    ring.push(event('t0'), 10_000);
    ring.push(event('t500'), 10_500);
    ring.push(snapshot('t1000'), 11_000);
    ring.expire(11_500); // cutoff 10_500: the one exactly at the cutoff stays
    assert.deepEqual(drops, [[1, 'event_window']]);
    assert.equal(ring.size, 2);
    ring.expire(11_501);
    assert.deepEqual(drops, [
      [1, 'event_window'],
      [1, 'event_window'],
    ]);
    assert.deepEqual(ring.take(11_600).map(label), ['t1000']);
  });

  test('is bounded in count: past maxItems the oldest goes, counted as event_ring_full', () => {
    const drops: [number, string][] = [];
    const ring = new EventRing(60_000, 3, (n, reason) => drops.push([n, reason]));
    for (let i = 0; i < 5; i++) ring.push(event(`e${i}`), 1000 + i);
    assert.equal(ring.size, 3);
    assert.deepEqual(drops, [
      [1, 'event_ring_full'],
      [1, 'event_ring_full'],
    ]);
    assert.deepEqual(ring.take(2000).map(label), ['e2', 'e3', 'e4']);
  });

  test('take returns the last window oldest first, drops what is older, and empties the ring', () => {
    const drops: [number, string][] = [];
    const ring = new EventRing(1000, 100, (n, reason) => drops.push([n, reason]));
    ring.push(event('old'), 1000);
    ring.push(snapshot('s'), 2500);
    ring.push(event('recent'), 2900);
    assert.deepEqual(ring.take(3000).map(label), ['s', 'recent']);
    assert.deepEqual(drops, [[1, 'event_window']]);
    assert.equal(ring.size, 0);
    assert.deepEqual(ring.take(3000), []);
  });

  test('a long burst expires old items as it goes, without waiting for a tick', () => {
    const drops: [number, string][] = [];
    const ring = new EventRing(100, 10_000, (n, reason) => drops.push([n, reason]));
    for (let i = 0; i < 128; i++) ring.push(event(`e${i}`), i * 10);
    assert.ok(ring.size < 128, `expired during the burst (size ${ring.size})`);
    const dropped = drops.reduce((a, [n]) => a + n, 0);
    assert.equal(dropped + ring.size, 128, 'every item is either kept or counted');
    assert.ok(drops.every(([, r]) => r === 'event_window'));
  });
});
