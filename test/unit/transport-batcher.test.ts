import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { decodeMetricBatch, decodeTextBatch, encodeMetricPack } from '@apm-sidecar/proto/upstream';
import { AckWindow, FrameBatcher, type FrameBody, type Pack } from '@apm-sidecar/sidecar';

const origin = { app: 'a', instanceId: 'i1', pid: 1 };

function metric(n: number): Pack {
  const packId = `p${n}`;
  const intervalStart = 60_000 * n;
  const body = encodeMetricPack({ packId, intervalStart, intervalMs: 60_000, points: [] });
  return { kind: 'metrics', packId, intervalStart, intervalMs: 60_000, points: 0, body };
}
const event = (n: number, pad = ''): Pack => ({ kind: 'event', origin, event: { ts: n, type: 'note', message: `e${n}${pad}` } });
const bt = (n: number): Pack => ({ kind: 'btRegistration', origin, name: `GET /${n}`, ts: n });

/** What a frame holds, readably: registrations, metric pack ids, event messages. */
function contents(f: FrameBody): string[] {
  if (f.key === 'numeric') return decodeMetricBatch(f.body).map((p) => p.packId);
  return decodeTextBatch(f.body).map((it) => (it.kind === 'btRegistration' ? it.name : it.kind === 'event' ? it.event.message : it.kind));
}

describe('FrameBatcher (pure: packs → frame bodies)', () => {
  test('seals registrations, then metrics, then events, whatever order they were added in', () => {
    const b = new FrameBatcher(1 << 20);
    const order: string[] = [];
    const add = (p: Pack, name: string) =>
      assert.deepEqual(
        b.add(p, () => order.push(name)),
        [],
      );
    add(event(1), 'e1');
    add(metric(1), 'p1');
    add(bt(1), 'bt1');
    add(metric(2), 'p2');
    add(event(2), 'e2');
    const frames = b.seal();
    assert.deepEqual(
      frames.map((f) => [f.key, contents(f)]),
      [
        ['text', ['GET /1']],
        ['numeric', ['p1', 'p2']],
        ['text', ['e1', 'e2']],
      ],
    );
    for (const f of frames) for (const d of f.dones) d();
    assert.deepEqual(order, ['bt1', 'p1', 'p2', 'e1', 'e2'], 'dones follow the packs in their frames');
    assert.equal(b.empty, true);
    assert.deepEqual(b.seal(), []);
  });

  test('no frame body exceeds net_send_max_bytes; every pack arrives once, in order', () => {
    const max = 2_000;
    const b = new FrameBatcher(max);
    const frames: FrameBody[] = [];
    for (let i = 0; i < 200; i++) {
      frames.push(...b.add(event(i, 'x'.repeat(i % 37)), () => {}));
      if (i % 3 === 0) frames.push(...b.add(metric(i), () => {}));
    }
    frames.push(...b.seal());
    assert.ok(frames.length > 5, `split into ${frames.length} frames`);
    for (const f of frames) assert.ok(f.body.length <= max, `a ${f.key} frame of ${f.body.length} bytes`);
    const events = frames.filter((f) => f.key === 'text').flatMap(contents);
    assert.deepEqual(
      events,
      Array.from({ length: 200 }, (_, i) => `e${i}${'x'.repeat(i % 37)}`),
    );
    const packs = frames.filter((f) => f.key === 'numeric').flatMap(contents);
    assert.deepEqual(
      packs,
      Array.from({ length: 67 }, (_, k) => `p${3 * k}`),
    );
  });

  test('takeDones hands back every batched pack and empties the lanes', () => {
    const b = new FrameBatcher(1 << 20);
    const names: string[] = [];
    b.add(event(1), () => names.push('e1'));
    b.add(bt(1), () => names.push('bt1'));
    b.add(metric(1), () => names.push('p1'));
    for (const d of b.takeDones()) d();
    assert.deepEqual(names, ['bt1', 'p1', 'e1']);
    assert.equal(b.empty, true);
  });
});

describe('AckWindow', () => {
  test('an ack releases exactly the oldest frame; any other counter is ERR_ACK_GAP', () => {
    const w = new AckWindow();
    const acked: string[] = [];
    w.track(7, [() => acked.push('a')], 100);
    w.track(8, [() => acked.push('b'), () => acked.push('c')], 50);
    assert.equal(w.unackedBytes, 150);
    const first = w.ack(7);
    assert.ok(Array.isArray(first));
    for (const d of first) d();
    assert.deepEqual(acked, ['a']);
    assert.equal(w.unackedBytes, 50);
    const gap = w.ack(9);
    assert.ok(!Array.isArray(gap));
    assert.equal(gap.code, 'ERR_ACK_GAP');
    assert.equal(w.length, 1, 'a wrong ack releases nothing');
    const rest = w.takeDones();
    assert.equal(rest.length, 2);
    assert.equal(w.length, 0);
    assert.equal(w.unackedBytes, 0);
    assert.equal(!Array.isArray(w.ack(8)) && w.ack(8).constructor.name, 'AckGapError', 'nothing in flight: any ack is a gap');
  });
});
