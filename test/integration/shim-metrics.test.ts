import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { type ApmClient, connect } from '@apm-sidecar/shim';
import { type SidecarProc, pointsOf, startSidecar, tempDir, waitFor } from '../helpers/procs';

type Point = Record<string, unknown> & { tags: Record<string, string>; count: number; sum: number; min: number; max: number };

const SPEED = ['--set', 'flush_ms=50', '--set', 'metric_interval_ms=200'];

/** A deterministic PRNG (mulberry32), so a failure reproduces. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The exact lower quantile the sketch estimates: the value at rank floor(q·(n−1)). */
function exactQuantile(sorted: number[], q: number): number {
  return sorted[Math.floor(q * (sorted.length - 1))] as number;
}

function assertWithin1pct(actual: unknown, exact: number, what: string): void {
  assert.equal(typeof actual, 'number', `${what} missing`);
  const err = Math.abs((actual as number) - exact);
  assert.ok(err <= 0.01 * Math.abs(exact), `${what}: ${actual} vs exact ${exact} (relative error ${(err / Math.abs(exact || 1)).toFixed(5)})`);
}

class Harness {
  sidecar!: SidecarProc;
  apm!: ApmClient;
  private markers = 0;
  private readonly tmp = tempDir('apm-shim-metrics-');

  async start(extra: string[] = []): Promise<void> {
    this.sidecar = await startSidecar(this.tmp.dir, [...SPEED, ...extra]);
    this.apm = connect({ socket: this.sidecar.socket, app: 'metrics-test' });
    await waitFor('the shim to be welcomed', () => this.apm.state === 'active');
  }

  async stop(): Promise<void> {
    await this.apm?.close();
    await this.sidecar?.kill('SIGTERM');
    this.tmp.cleanup();
  }

  points(name: string): Point[] {
    return pointsOf(this.sidecar, name) as Point[];
  }

  /**
   * Record a marker after everything else and wait until it is printed. The
   * sidecar emits intervals in order, and everything before the marker was
   * acked (committed) before it was sent, so after this no earlier point is
   * still on its way: totals can be compared exactly.
   */
  async settled(): Promise<void> {
    const name = `marker.${++this.markers}`;
    this.apm.counter(name).add(1);
    assert.equal(await this.apm.flush(), true, 'the sidecar acked every frame');
    await waitFor(`marker ${name} in the sidecar output`, () => this.points(name).length > 0);
  }
}

function totals(points: Point[]): { count: number; sum: number; min: number; max: number } {
  return points.reduce((a, p) => ({ count: a.count + p.count, sum: a.sum + p.sum, min: Math.min(a.min, p.min), max: Math.max(a.max, p.max) }), {
    count: 0,
    sum: 0,
    min: Number.POSITIVE_INFINITY,
    max: Number.NEGATIVE_INFINITY,
  });
}

describe('shim metrics reach a real sidecar exactly', () => {
  const h = new Harness();
  before(() => h.start());
  after(() => h.stop());

  it('counters: exact counts and sums per series over many flushes', async () => {
    const eu = h.apm.counter('orders.created', { region: 'eu' });
    const us = h.apm.counter('orders.created', { region: 'us' });
    for (let round = 0; round < 5; round++) {
      for (let i = 0; i < 200; i++) eu.add();
      for (let i = 0; i < 10; i++) us.add(2.5);
      assert.equal(await h.apm.flush(), true);
    }
    await h.settled();
    const pts = h.points('orders.created');
    for (const p of pts) assert.equal(p.type, 'counter');
    assert.deepEqual(totals(pts.filter((p) => p.tags.region === 'eu')), { count: 1000, sum: 1000, min: 1, max: 1 });
    assert.deepEqual(totals(pts.filter((p) => p.tags.region === 'us')), { count: 50, sum: 125, min: 2.5, max: 2.5 });
    assert.equal(pts.filter((p) => p.tags.region !== 'eu' && p.tags.region !== 'us').length, 0);
  });

  it('a handle is bound to its series: same name and tags in any order give the same handle', () => {
    const a = h.apm.counter('bound', { a: '1', b: 2 });
    assert.equal(h.apm.counter('bound', { b: '2', a: 1 }), a);
    assert.notEqual(h.apm.counter('bound', { a: '1' }), a);
    assert.notEqual(h.apm.gauge('bound', { a: '1', b: 2 }) as unknown, a, 'kind is part of the identity');
  });

  it('metrics recorded without flush() are sent by the periodic flush', async () => {
    h.apm.counter('periodic').add(3);
    h.apm.counter('periodic').add(4);
    await waitFor('the periodic flush to deliver', () => h.points('periodic').length > 0);
    await h.settled();
    assert.deepEqual(totals(h.points('periodic')), { count: 2, sum: 7, min: 3, max: 4 });
  });

  it('gauges: count, sum, min, max and the last value set', async () => {
    const g = h.apm.gauge('pool.size', { pool: 'db' });
    g.set(3);
    g.set(8);
    g.set(5);
    assert.equal(await h.apm.flush(), true);
    await h.settled();
    const pts = h.points('pool.size');
    assert.equal(pts.length, 1, 'one flush window gives one point');
    const p = pts[0] as Point;
    assert.equal(p.type, 'gauge');
    assert.deepEqual({ count: p.count, sum: p.sum, min: p.min, max: p.max, value: p.value }, { count: 3, sum: 16, min: 3, max: 8, value: 5 });
  });

  it('histograms: exact count, sum, min and max; p50, p95, p99 within 1%', async () => {
    const rnd = prng(42);
    const values: number[] = [];
    for (let i = 0; i < 20000; i++) {
      // Log-normal latencies in ms, spanning several orders of magnitude.
      const u = Math.max(rnd(), 1e-12);
      const n = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rnd());
      values.push(Math.exp(3 + 1.2 * n));
    }
    const lat = h.apm.histogram('http.server.duration', { route: '/pay' });
    let sum = 0;
    for (const v of values) {
      lat.record(v);
      sum += v;
    }
    assert.equal(await h.apm.flush(), true);
    await h.settled();
    const pts = h.points('http.server.duration');
    assert.equal(pts.length, 1, 'one flush window gives one point');
    const p = pts[0] as Point;
    const sorted = [...values].sort((a, b) => a - b);
    assert.equal(p.type, 'histogram');
    assert.equal(p.count, 20000);
    assert.equal(p.sum, sum);
    assert.equal(p.min, sorted[0]);
    assert.equal(p.max, sorted[sorted.length - 1]);
    assertWithin1pct(p.p50, exactQuantile(sorted, 0.5), 'p50');
    assertWithin1pct(p.p95, exactQuantile(sorted, 0.95), 'p95');
    assertWithin1pct(p.p99, exactQuantile(sorted, 0.99), 'p99');
  });

  it('histograms with negative, zero and positive values keep their quantiles', async () => {
    const hist = h.apm.histogram('signed');
    const values: number[] = [];
    for (let v = -50; v <= 50; v++) {
      hist.record(v);
      values.push(v);
    }
    assert.equal(await h.apm.flush(), true);
    await h.settled();
    const p = h.points('signed')[0] as Point;
    assert.deepEqual({ count: p.count, sum: p.sum, min: p.min, max: p.max }, { count: 101, sum: 0, min: -50, max: 50 });
    assert.equal(p.p50, 0);
    assertWithin1pct(p.p95, exactQuantile(values, 0.95), 'p95');
    assertWithin1pct(p.p99, exactQuantile(values, 0.99), 'p99');
  });

  it('a tag named __proto__ is kept as a tag', async () => {
    h.apm.counter('proto.tag', JSON.parse('{"__proto__":"x","b":"y"}')).add(1);
    h.apm.counter('proto.tag', { b: 'y' }).add(10);
    assert.equal(await h.apm.flush(), true);
    await h.settled();
    const pts = h.points('proto.tag');
    const withProto = pts.filter((p) => Object.hasOwn(p.tags, '__proto__'));
    assert.equal(totals(withProto).sum, 1);
    assert.equal(Object.getOwnPropertyDescriptor(withProto[0]?.tags, '__proto__')?.value, 'x');
    assert.equal(totals(pts.filter((p) => !Object.hasOwn(p.tags, '__proto__'))).sum, 10);
  });

  it('the connection survives everything the shim sends (no frame rejected)', async () => {
    assert.equal(h.sidecar.logs('closing IPC connection').length, 0, JSON.stringify(h.sidecar.logs('closing IPC connection')));
    assert.equal(h.sidecar.logs('shim connected').length, 1);
  });
});

describe('shim metrics with a small sidecar frame limit', () => {
  const h = new Harness();
  before(() => h.start(['--set', 'ipc_max_frame_bytes=16384']));
  after(() => h.stop());

  it('splits one flush into frames within the limit the sidecar announced; every point arrives once', async () => {
    for (let i = 0; i < 3000; i++) h.apm.counter('wide', { series: String(i) }).add(i + 1);
    assert.equal(await h.apm.flush(), true);
    await h.settled();
    const pts = h.points('wide');
    const bySeries = new Map<string, Point[]>();
    for (const p of pts) bySeries.set(p.tags.series as string, [...(bySeries.get(p.tags.series as string) ?? []), p]);
    assert.equal(bySeries.size, 3000);
    for (const [series, list] of bySeries)
      assert.deepEqual(totals(list), { count: 1, sum: Number(series) + 1, min: Number(series) + 1, max: Number(series) + 1 }, `series ${series}`);
    assert.equal(h.sidecar.logs('closing IPC connection').length, 0);
    assert.ok(h.apm.stats().acked >= 2, `more than one frame was needed (acked ${h.apm.stats().acked})`);
    assert.deepEqual(h.apm.stats().dropped, {});
  });
});

describe('shim metrics from two apps behind one sidecar', () => {
  const h = new Harness();
  before(() => h.start());
  after(() => h.stop());

  it('every series carries its app as the tag `app`: two apps behind one sidecar stay two series; an app tag given by the caller is kept', async () => {
    const other = connect({ socket: h.sidecar.socket, app: 'other-app' });
    try {
      await waitFor('the second shim to be welcomed', () => other.state === 'active');
      h.apm.counter('apps.n', { route: '/a' }).add(1);
      other.counter('apps.n', { route: '/a' }).add(10);
      other.counter('apps.n', { route: '/a', app: 'chosen' }).add(100);
      assert.equal(await other.flush(), true);
      assert.equal(await h.apm.flush(), true);
      await h.settled();
      const byApp = (app: string) => totals(h.points('apps.n').filter((p) => p.tags.app === app && p.tags.route === '/a')).sum;
      assert.deepEqual([byApp('metrics-test'), byApp('other-app'), byApp('chosen')], [1, 10, 100]);
    } finally {
      await other.close();
    }
  });
});
