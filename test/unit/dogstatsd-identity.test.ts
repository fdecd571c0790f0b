import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { MetricKind, type MetricPoint, encodeMetrics } from '@apm-sidecar/proto';
import { DogStatsdAggregator, encodeDogStatsdMetrics, parseDogStatsdLine } from '@apm-sidecar/sidecar';

/**
 * The aggregator reads a metric line whose identity (all but its values) it has seen before without
 * the parser. These cases hold it to the parser: random lines, many sharing an identity, go through
 * the aggregator and through a plain model built on parseDogStatsdLine, line by line, and must give
 * the same points and the same refusals by reason.
 */

interface RefPoint {
  kind: number;
  count: number;
  sum: number;
  min: number;
  max: number;
  last: number;
  members: Set<string> | null;
}

const idOf = (kind: number, name: string, tags: Record<string, string>) =>
  JSON.stringify([kind, name, Object.entries(tags).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))]);

/** The documented semantics, one parsed line at a time (no `|T` lines: those take the parser anyway). */
function model(lines: string[], maxSeries: number) {
  const points = new Map<string, RefPoint>();
  const invalid: Record<string, number> = {};
  const refuse = (r: string) => {
    invalid[r] = (invalid[r] ?? 0) + 1;
  };
  for (const line of lines) {
    const p = parseDogStatsdLine(line);
    if (p.kind === 'invalid') {
      refuse(p.reason);
      continue;
    }
    if (p.kind === 'event') continue;
    const kind = p.type === 'c' ? MetricKind.Counter : p.type === 'g' || p.type === 's' ? MetricKind.Gauge : MetricKind.Histogram;
    const id = idOf(kind, p.name, p.tags);
    let a = points.get(id);
    if (a === undefined && points.size >= maxSeries) {
      refuse('series_limit');
      continue;
    }
    if (a === undefined) {
      a = { kind, count: 0, sum: 0, min: Number.POSITIVE_INFINITY, max: Number.NEGATIVE_INFINITY, last: Number.NaN, members: null };
      points.set(id, a);
    }
    if (p.type === 's') {
      a.members ??= new Set();
      a.members.add(p.member);
      continue;
    }
    const weight = Math.min(1_000_000, Math.max(1, Math.round(1 / p.rate)));
    let total = 0;
    for (const v of p.values) total += kind === MetricKind.Counter ? v / p.rate : v * weight;
    if (!Number.isFinite(a.sum + total)) {
      refuse('overflow');
      continue;
    }
    for (const v of p.values) {
      a.count += kind === MetricKind.Histogram ? weight : 1;
      const seen = kind === MetricKind.Counter ? v / p.rate : v;
      if (seen < a.min) a.min = seen;
      if (seen > a.max) a.max = seen;
      if (kind === MetricKind.Gauge) a.last = v;
    }
    a.sum += total;
  }
  return { points, invalid };
}

function sameAsModel(got: MetricPoint[], want: Map<string, RefPoint>): void {
  assert.equal(got.length, want.size, 'points');
  for (const p of got) {
    const w = want.get(idOf(p.series.kind, p.series.name, p.series.tags));
    assert.ok(w, `unexpected point ${p.series.name} ${JSON.stringify(p.series.tags)}`);
    if (w.members !== null) {
      assert.equal(p.last, w.members.size, 'set size');
      continue;
    }
    assert.equal(p.count, w.count, 'count');
    assert.equal(p.sum, w.sum, 'sum');
    assert.equal(p.min, w.min, 'min');
    assert.equal(p.max, w.max, 'max');
    if (w.kind === MetricKind.Gauge) assert.equal(p.last, w.last, 'last');
  }
}

const names = fc.constantFrom('a', 'page.views', 'm_1', '_e', '_sc', 'x'.repeat(300), '', 'na me', 'ünï');
const values = fc.constantFrom(
  '1',
  '-2.5',
  '+3',
  '.5',
  '1.',
  '0',
  '-0',
  '1e3',
  '2.5E-2',
  '0x10',
  '',
  'NaN',
  '1e309',
  '123456789012345678',
  '0.1234567890123456',
  '0.000001',
  '1e308',
  '7:8',
  '1:x',
  ' 1',
  '.',
  '-',
  '9007199254740993',
  'abc',
);
const types = fc.constantFrom('c', 'g', 'ms', 'h', 'd', 's', 'zz', '', 'C');
const tag = fc.constantFrom('env:prod', 'env:dev', 'a', 'b:1', '__proto__:x', 'constructor', `k:${'v'.repeat(300)}`, ':v', 'url:http://a:80/b', '', 'z:é');
const fields = fc.array(
  fc.oneof(
    fc.constantFrom('@0.5', '@0.1', '@0', '@2', '@1', '@abc', '@', 'c:abc', 'c:', 'zz', 'e:x', ''),
    fc.array(tag, { maxLength: 4 }).map((t) => `#${t.join(',')}`),
    fc.constant(`#${Array.from({ length: 33 }, (_, i) => `t${i}:v`).join(',')}`),
  ),
  { maxLength: 3 },
);
/** An identity (name, type, fields), so that lines share it and differ in their values. */
const ident = fc.tuple(names, types, fields);
const scenario = fc.record({
  idents: fc.array(ident, { minLength: 1, maxLength: 12 }),
  lines: fc.array(fc.tuple(fc.nat(), values, fc.constantFrom('', '\r')), { minLength: 1, maxLength: 60 }),
  maxSeries: fc.constantFrom(1, 3, 100),
  packets: fc.integer({ min: 1, max: 4 }),
});

describe('DogStatsD: lines read by identity give what the parser gives', () => {
  test('random lines sharing identities: same points, same refusals by reason, over several windows', () => {
    fc.assert(
      fc.property(scenario, (sc) => {
        const text = sc.lines.map(([i, v, cr]) => {
          const [name, type, fs] = sc.idents[i % sc.idents.length] as [string, string, string[]];
          return `${[`${name}:${v}`, type, ...fs].join('|')}${cr}`;
        });
        const a = new DogStatsdAggregator({ maxSeries: sc.maxSeries });
        // The same lines in two windows: the second one is read with the identities already known.
        for (let round = 0; round < 2; round++) {
          const before = { ...a.counts.invalidByReason };
          const per = Math.ceil(text.length / sc.packets);
          for (let i = 0; i < text.length; i += per) a.packet(Buffer.from(text.slice(i, i + per).join('\n')));
          const msgs = a.take(1, Date.now());
          // What is retained is what encodeMetrics would write.
          for (const m of msgs) assert.ok(encodeDogStatsdMetrics(m).equals(encodeMetrics(m)), 'frame bytes');
          const want = model(
            text.map((l) => (l.endsWith('\r') ? l.slice(0, -1) : l)).filter((l) => l.length > 0),
            sc.maxSeries,
          );
          sameAsModel(
            msgs.flatMap((m) => m.points),
            want.points,
          );
          const delta = Object.fromEntries(
            Object.entries(a.counts.invalidByReason)
              .map(([k, v]) => [k, v - ((before as Record<string, number>)[k] ?? 0)])
              .filter(([, v]) => v !== 0),
          );
          assert.deepEqual(delta, want.invalid);
        }
      }),
      { numRuns: 400 },
    );
  });

  test('a series counted under one spelling is found under another (rate, tag order, ms and h)', () => {
    const a = new DogStatsdAggregator();
    a.packet(Buffer.from(['x:1|c|#a:1,b:2', 'x:1|c|@0.5|#b:2,a:1', 'x:2|c|#a:1,b:2', 'lat:10|ms|#r:x', 'lat:30|h|#r:x', 'lat:20|d|#r:x'].join('\n')));
    const points = a.take(1, Date.now()).flatMap((m) => m.points);
    assert.equal(points.length, 2);
    const x = points.find((p) => p.series.name === 'x');
    assert.equal(x?.sum, 5);
    assert.equal(x?.count, 3);
    const lat = points.find((p) => p.series.name === 'lat');
    assert.equal(lat?.count, 3);
    assert.equal(lat?.sum, 60);
  });

  test('max_series bounds the flush window: the line of one series more is refused as series_limit and counted', () => {
    const a = new DogStatsdAggregator({ maxSeries: 2 });
    a.packet(Buffer.from('a:1|c\nb:1|c\nc:1|c\na:1|c\nd:1|g'));
    const points = a.take(1, Date.now()).flatMap((m) => m.points);
    assert.deepEqual(points.map((p) => [p.series.name, p.sum]).sort(), [
      ['a', 2],
      ['b', 1],
    ]);
    assert.deepEqual(a.counts.invalidByReason, { series_limit: 2 });
    // The next window has room again.
    a.packet(Buffer.from('c:1|c'));
    assert.equal(a.take(2, Date.now())[0]?.points[0]?.series.name, 'c');
  });

  test('a client inventing a new series on every line is still read right once the identities it left are forgotten', () => {
    // maxSeries 5: the identity cache keeps at most 10 entries and starts afresh past them.
    const a = new DogStatsdAggregator({ maxSeries: 5 });
    for (let w = 0; w < 3; w++) {
      const lines = Array.from({ length: 40 }, (_, i) => `s${i % 25}:${i}|c|#w:${w}`);
      a.packet(Buffer.from(lines.join('\n')));
      const points = a.take(w + 1, Date.now()).flatMap((m) => m.points);
      assert.deepEqual(points.map((p) => p.series.name).sort(), ['s0', 's1', 's2', 's3', 's4']);
      // s0 got lines 0 and 25: 0 + 25.
      assert.equal(points.find((p) => p.series.name === 's0')?.sum, 25);
    }
  });
});
