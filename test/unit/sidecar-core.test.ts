import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { MetricKind, type MetricPoint, type MetricsMessage, type Series, Sketch, encodeSeries, seriesKey } from '@apm-sidecar/proto';
import { Aggregator, type AggPoint, BoundedQueue, Sender, SeqTracker, type Pack, type Transport } from '@apm-sidecar/sidecar';

function series(kind: 0 | 1 | 2, name: string, tags: Record<string, string> = {}): Series {
  return { key: seriesKey(encodeSeries(kind, name, tags)), kind, name, tags };
}

function hist(s: Series, values: number[]): MetricPoint {
  const sk = new Sketch();
  for (const v of values) sk.add(v);
  return { series: s, count: sk.count, sum: sk.sum, min: sk.min, max: sk.max, last: Number.NaN, sketch: sk };
}

function msg(ts: number, points: MetricPoint[], seq = 1): MetricsMessage {
  return { seq, ts, windowMs: 100, points };
}

describe('Aggregator', () => {
  test('merges points of the same series and interval from several shims', () => {
    const out: [number, AggPoint[]][] = [];
    const agg = new Aggregator(1000, 100, 1000, (start, pts) => out.push([start, pts]));
    const s = series(MetricKind.Histogram, 'lat', { route: '/a' });
    agg.add(msg(10_000, [hist(s, [1, 2, 3])]));
    agg.add(msg(10_500, [hist(s, [4, 5])]));
    agg.add(msg(11_000, [hist(s, [6])]));
    assert.equal(agg.tick(11_099), 0, 'not before the grace period has passed');
    assert.equal(agg.tick(11_100), 1);
    assert.equal(out.length, 1);
    const [start, pts] = out[0] as [number, AggPoint[]];
    assert.equal(start, 10_000);
    assert.equal(pts[0]?.count, 5);
    assert.equal(pts[0]?.sum, 15);
    assert.equal(pts[0]?.min, 1);
    assert.equal(pts[0]?.max, 5);
    assert.equal(pts[0]?.sketch?.count, 5);
    assert.equal(agg.stats().points, 1, 'the next interval is still open');
  });

  test('an emitted interval lists exactly the retained frames folded into it; a straggler goes with the re-opened interval', () => {
    const out: [number, string[]][] = [];
    const agg = new Aggregator(1000, 0, 1000, (start, _pts, frames) => out.push([start, frames.map((f) => `${f.instanceId}:${f.seq}`)]));
    const s = series(MetricKind.Histogram, 'lat');
    agg.add(msg(10_000, [hist(s, [1])], 1), { instanceId: 'a', seq: 1 });
    agg.add(msg(10_200, [hist(s, [2])], 1), { instanceId: 'b', seq: 1 });
    agg.add(msg(11_000, [hist(s, [3])], 2), { instanceId: 'a', seq: 2 });
    agg.tick(11_000);
    agg.add(msg(10_900, [hist(s, [4])], 3), { instanceId: 'a', seq: 3 }); // a straggler for 10 000
    agg.tick(12_000);
    assert.deepEqual(out, [
      [10_000, ['a:1', 'b:1']],
      [10_000, ['a:3']],
      [11_000, ['a:2']],
    ]);
  });

  test('a gauge keeps the value with the latest timestamp, whatever the arrival order', () => {
    const out: AggPoint[] = [];
    const agg = new Aggregator(1000, 0, 1000, (_s, pts) => out.push(...pts));
    const g = series(MetricKind.Gauge, 'pool');
    const gp = (v: number): MetricPoint => ({ series: g, count: 1, sum: v, min: v, max: v, last: v, sketch: null });
    agg.add(msg(10_600, [gp(8)]));
    agg.add(msg(10_200, [gp(3)]));
    agg.tick(0, true);
    assert.equal(out[0]?.last, 8);
    assert.equal(out[0]?.count, 2);
  });

  test('a straggler for an interval already emitted goes out again for that same interval', () => {
    const out: [number, AggPoint[]][] = [];
    const agg = new Aggregator(1000, 0, 1000, (start, pts) => out.push([start, pts]));
    const c = series(MetricKind.Counter, 'n');
    const cp = (v: number): MetricPoint => ({ series: c, count: 1, sum: v, min: v, max: v, last: Number.NaN, sketch: null });
    agg.add(msg(5_000, [cp(1)]));
    agg.tick(6_000);
    agg.add(msg(5_500, [cp(2)]));
    agg.tick(7_000);
    assert.deepEqual(
      out.map(([s, p]) => [s, p[0]?.sum]),
      [
        [5_000, 1],
        [5_000, 2],
      ],
    );
  });

  test('drops new points past maxPoints and counts them', () => {
    const agg = new Aggregator(1000, 0, 2, () => {});
    const pts = ['a', 'b', 'c', 'd'].map((n) => ({ series: series(0, n), count: 1, sum: 1, min: 1, max: 1, last: Number.NaN, sketch: null }));
    assert.equal(agg.add(msg(1000, pts)), 2);
    assert.equal(agg.droppedSeriesLimit, 2);
    assert.equal(agg.stats().points, 2);
  });
});

describe('BoundedQueue', () => {
  test('drops the oldest when full, counts it, and reports one episode', () => {
    const episodes: [string, number][] = [];
    const q = new BoundedQueue<number>('q', 3, (_q, phase, total) => episodes.push([phase, total]));
    for (let i = 1; i <= 5; i++) q.push(i);
    assert.equal(q.depth, 3);
    assert.equal(q.dropped, 2);
    assert.deepEqual([q.shift(), q.shift()], [3, 4]);
    q.push(6);
    assert.deepEqual(episodes, [
      ['start', 0],
      ['end', 2],
    ]);
  });

  test('unshift puts a failed item back at the head', () => {
    const q = new BoundedQueue<number>('q', 10);
    q.push(1);
    q.push(2);
    const x = q.shift() as number;
    q.unshift(x);
    assert.deepEqual([q.shift(), q.shift(), q.shift()], [1, 2, undefined]);
  });
});

class FakeTransport implements Transport {
  readonly name = 'fake';
  readonly window = 1;
  ready = true;
  sent: Pack[] = [];
  fail = false;
  start(): void {}
  send(pack: Pack, done: (err?: Error) => void): void {
    if (this.fail) return done(new Error('down'));
    this.sent.push(pack);
    done();
  }
  reconnect() {
    return { ok: false, message: 'fake' };
  }
  status() {
    return {};
  }
  readiness() {
    return { ready: true, reason: 'fake' };
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

const ev = (i: number): Pack => ({ kind: 'event', origin: { app: 'a', instanceId: 'i', pid: 1 }, event: { ts: i, type: 't', message: String(i) } });
const tr = (i: number): Pack => ({
  kind: 'trace',
  origin: { app: 'a', instanceId: 'i', pid: 1 },
  trace: { txid: String(i), traceId: 't', spanId: 's', name: 'n', startTime: i, durationMs: 1, steps: [] },
});

describe('Sender', () => {
  test('a flood of traces never starves queue1: weighted round robin 4:1', () => {
    const q1 = new BoundedQueue<Pack>('queue1', 100);
    const q2 = new BoundedQueue<Pack>('queue2', 1000);
    for (let i = 0; i < 1000; i++) q2.push(tr(i));
    for (let i = 0; i < 10; i++) q1.push(ev(i));
    const t = new FakeTransport();
    const sent: string[] = [];
    new Sender([q1, q2], t, (p) => sent.push(p.kind)).step();
    const firstEvents = sent.slice(0, 13).filter((k) => k === 'event').length;
    assert.equal(firstEvents, 10, 'all 10 events go out within the first 13 packs');
    assert.equal(sent.length, 1010);
  });

  test('a pack that fails stays at the head and is sent again', () => {
    const q1 = new BoundedQueue<Pack>('queue1', 10);
    const q2 = new BoundedQueue<Pack>('queue2', 10);
    q1.push(ev(1));
    q1.push(ev(2));
    const t = new FakeTransport();
    t.fail = true;
    const s = new Sender([q1, q2], t, () => {});
    s.step();
    assert.equal(q1.depth, 2);
    t.fail = false;
    s.step();
    assert.deepEqual(
      t.sent.map((p) => (p.kind === 'event' ? p.event.ts : -1)),
      [1, 2],
    );
  });
});

describe('SeqTracker', () => {
  test('accepts increasing seqs, rejects repeats, and forgets the least recently seen instance past its bound', () => {
    const t = new SeqTracker(2);
    assert.equal(t.isNew('a', 1), true);
    t.commit('a', 1);
    assert.equal(t.isNew('a', 1), false);
    assert.equal(t.isNew('a', 3), true, 'a gap (the shim dropped frames) is accepted');
    t.commit('b', 5);
    t.commit('a', 3);
    t.commit('c', 1);
    assert.equal(t.last('b'), 0, 'b was the least recently seen');
    assert.equal(t.last('a'), 3);
    assert.equal(t.size, 2);
  });
});
