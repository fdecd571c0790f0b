import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { EventPack, MetricPoint, MetricsMessage } from '@apm-sidecar/proto';
import { DogStatsdAggregator } from '@apm-sidecar/sidecar';

/**
 * Parser cases written from Datadog's public description of the DogStatsD datagram (metrics with
 * value packing, sample rates, tags, container id and timestamps; events; service checks), one row
 * per behaviour. `points` lists every point the lines produce (kind 0 counter, 1 gauge, 2 histogram);
 * `invalid` the refusals by reason; `events` the events and service checks handed on.
 */
interface Want {
  name: string;
  tags?: Record<string, string>;
  kind?: number;
  count?: number;
  sum?: number;
  last?: number;
  /** The message's timestamp, for lines carrying `|T`. */
  ts?: number;
}
interface Case {
  what: string;
  lines: string[];
  points?: Want[];
  events?: Partial<EventPack>[];
  invalid?: Record<string, number>;
}

const C = 0;
const G = 1;
const H = 2;
const tags33 = Array.from({ length: 33 }, (_, i) => `t${i}:v`).join(',');

const CASES: Case[] = [
  { what: 'a counter', lines: ['page.views:1|c'], points: [{ name: 'page.views', kind: C, count: 1, sum: 1 }] },
  { what: 'a gauge keeps the last value', lines: ['fuel.level:0.5|g', 'fuel.level:0.25|g'], points: [{ name: 'fuel.level', kind: G, last: 0.25 }] },
  {
    what: 'a histogram sampled at 0.5 counts each value twice',
    lines: ['song.length:240|h|@0.5'],
    points: [{ name: 'song.length', kind: H, count: 2, sum: 480 }],
  },
  { what: 'a timer sampled at 0.25', lines: ['req:12|ms|@0.25'], points: [{ name: 'req', kind: H, count: 4, sum: 48 }] },
  { what: 'a distribution sampled at 0.1', lines: ['d.lat:3|d|@0.1'], points: [{ name: 'd.lat', kind: H, count: 10, sum: 30 }] },
  {
    what: 'a counter sampled at 0.5 counts double',
    lines: ['users.online:1|c|@0.5|#country:china'],
    points: [{ name: 'users.online', tags: { country: 'china' }, sum: 2 }],
  },
  { what: 'a sample rate on a gauge changes nothing', lines: ['pool:5|g|@0.5'], points: [{ name: 'pool', kind: G, last: 5, count: 1 }] },
  { what: 'a sample rate of 1 is the default', lines: ['x:3|c|@1'], points: [{ name: 'x', sum: 3 }] },
  { what: 'tags key:value and bare', lines: ['x:1|c|#env:prod,canary'], points: [{ name: 'x', tags: { env: 'prod', canary: '' } }] },
  { what: 'a tag value may hold colons', lines: ['x:1|c|#url:http://a:80/b'], points: [{ name: 'x', tags: { url: 'http://a:80/b' } }] },
  {
    what: 'series differ by tags',
    lines: ['x:1|c|#env:a', 'x:1|c|#env:b'],
    points: [
      { name: 'x', tags: { env: 'a' }, sum: 1 },
      { name: 'x', tags: { env: 'b' }, sum: 1 },
    ],
  },
  { what: 'a repeated tag key keeps every value', lines: ['x:1|c|#env:b,env:a'], points: [{ name: 'x', tags: { env: 'a,b' } }] },
  {
    what: 'the order of repeated tags does not make another series',
    lines: ['x:1|c|#env:a,env:b', 'x:2|c|#env:b,env:a,env:a'],
    points: [{ name: 'x', tags: { env: 'a,b' }, sum: 3, count: 2 }],
  },
  { what: 'packed values on a distribution (protocol 1.1)', lines: ['lat:1:2:3|d'], points: [{ name: 'lat', kind: H, count: 3, sum: 6 }] },
  { what: 'packed values on a counter share the sample rate', lines: ['hits:1:2|c|@0.5'], points: [{ name: 'hits', kind: C, count: 2, sum: 6 }] },
  { what: 'packed values on a gauge: the last wins', lines: ['g:1:5:3|g'], points: [{ name: 'g', kind: G, last: 3 }] },
  { what: 'packed values on a timer with tags', lines: ['t:10:20|ms|#r:a'], points: [{ name: 't', tags: { r: 'a' }, kind: H, count: 2, sum: 30 }] },
  {
    what: 'a set counts distinct members',
    lines: ['users.uniques:1234|s', 'users.uniques:99|s', 'users.uniques:1234|s'],
    points: [{ name: 'users.uniques', kind: G, last: 2 }],
  },
  { what: 'a set member is taken whole, colons and all', lines: ['u:a:b|s', 'u:a|s'], points: [{ name: 'u', kind: G, last: 2 }] },
  {
    what: 'sets differ by tags',
    lines: ['u:a|s|#p:1', 'u:b|s|#p:1', 'u:a|s|#p:2'],
    points: [
      { name: 'u', tags: { p: '1' }, last: 2 },
      { name: 'u', tags: { p: '2' }, last: 1 },
    ],
  },
  { what: 'the container id becomes a tag', lines: ['x:1|c|#env:a|c:3f2a9c'], points: [{ name: 'x', tags: { env: 'a', container_id: '3f2a9c' } }] },
  { what: 'a timestamp on a counter stamps its point', lines: ['x:1|c|T1656581400'], points: [{ name: 'x', sum: 1, ts: 1656581400000 }] },
  { what: 'a timestamp on a gauge stamps its point', lines: ['g:7|g|#a:b|T1656581400'], points: [{ name: 'g', last: 7, tags: { a: 'b' }, ts: 1656581400000 }] },
  { what: 'a timestamp on a histogram is ignored', lines: ['h:5|h|T1656581400'], points: [{ name: 'h', count: 1 }] },
  { what: 'unknown fields are ignored', lines: ['x:1|c|e:it-false|zz|#env:a'], points: [{ name: 'x', tags: { env: 'a' }, sum: 1 }] },
  {
    what: 'signed and exponent values',
    lines: ['x:-2|c', 'x:+1e1|c', 'y:.5|g'],
    points: [
      { name: 'x', sum: 8, count: 2 },
      { name: 'y', last: 0.5 },
    ],
  },
  { what: 'an empty tag field and empty tags are skipped', lines: ['x:1|c|#', 'x:1|c|#,,'], points: [{ name: 'x', tags: {}, sum: 2 }] },
  {
    what: 'an event with its optional fields',
    lines: ['_e{5,4}:title|text|d:1656581400|h:web1|p:low|t:error|s:deploys|k:k1|#env:prod,canary'],
    events: [
      {
        type: 'dogstatsd.event',
        message: 'title',
        ts: 1656581400000,
        attributes: { text: 'text', hostname: 'web1', priority: 'low', alertType: 'error', source: 'deploys', aggregationKey: 'k1', tags: 'env:prod,canary' },
      },
    ],
  },
  {
    what: 'event lengths are UTF-8 bytes',
    lines: ['_e{6,3}:héllo|a|b'],
    events: [{ message: 'héllo', attributes: { text: 'a|b', alertType: 'info', priority: 'normal' } }],
  },
  {
    what: 'an event text carries escaped newlines',
    lines: ['_e{1,6}:t|a\\nb\\n'],
    events: [{ message: 't', attributes: { text: 'a\nb\n', alertType: 'info', priority: 'normal' } }],
  },
  {
    what: 'a service check with a message holding a pipe',
    lines: ['_sc|db.up|2|d:1656581400|h:db1|#env:prod|m:timeout | retrying'],
    events: [
      {
        type: 'dogstatsd.service_check',
        ts: 1656581400000,
        message: 'db.up: critical — timeout | retrying',
        attributes: { check: 'db.up', status: 'critical', statusCode: 2, hostname: 'db1', tags: 'env:prod', message: 'timeout | retrying' },
      },
    ],
  },
  {
    what: 'a service check, status only',
    lines: ['_sc|cache|0'],
    events: [{ message: 'cache: ok', attributes: { check: 'cache', status: 'ok', statusCode: 0 } }],
  },
  { what: 'no type', lines: ['nocolon|c', 'x:1', 'x'], invalid: { no_type: 3 } },
  { what: 'no name, or a name over 256 bytes', lines: [':1|c', `${'n'.repeat(257)}:1|c`], invalid: { bad_name: 2 } },
  { what: 'an unknown type', lines: ['x:1|zz', 'x:1|'], invalid: { bad_type: 2 } },
  {
    what: 'values that are not decimal numbers',
    lines: ['x:abc|c', 'x:|c', 'x:1::2|d', 'x:NaN|g', 'x:Infinity|c', 'x:0x10|c', 'x: 1|c', 'u:|s', 'x:1e999|c'],
    invalid: { bad_value: 9 },
  },
  { what: 'a sample rate outside (0, 1]', lines: ['x:1|c|@2', 'x:1|c|@0', 'x:1|h|@-1', 'x:1|d|@', 'x:1|ms|@abc'], invalid: { bad_sample_rate: 5 } },
  {
    what: 'a bad timestamp, or one more than 10 minutes ahead',
    lines: ['x:1|c|T', 'x:1|c|T-5', 'x:1|g|Tabc', 'x:1|c|T0', 'x:1|c|T99999999999'],
    invalid: { bad_timestamp: 5 },
  },
  { what: 'a tag without a key, or too long', lines: ['x:1|c|#:v', `x:1|c|#k:${'v'.repeat(257)}`], invalid: { bad_tag: 2 } },
  { what: 'more than 32 tag keys', lines: [`x:1|c|#${tags33}`], invalid: { too_many_tags: 1 } },
  {
    what: 'events whose lengths do not match',
    lines: ['_e{10,4}:ti|text', '_e{2,4}:title|text', '_e{a,4}:t|text', '_e{0,1}:|x', '_e{1,1}:t|xy'],
    invalid: { bad_event: 5 },
  },
  {
    what: 'service checks without a name or with a status outside 0..3',
    lines: ['_sc|svc|7', '_sc||0', '_sc|svc', '_sc|svc|ok'],
    invalid: { bad_service_check: 4 },
  },
];

function run(lines: string[]): { msgs: MetricsMessage[]; events: EventPack[]; a: DogStatsdAggregator } {
  const events: EventPack[] = [];
  const a = new DogStatsdAggregator({ onEvent: (e: EventPack) => events.push(e) });
  a.packet(Buffer.from(lines.join('\n')));
  const msgs = [a.take(1, Date.now())].flat().filter((m): m is MetricsMessage => m !== null);
  return { msgs, events, a };
}

function matches(p: MetricPoint, ts: number, w: Want): boolean {
  if (p.series.name !== w.name) return false;
  if (w.tags !== undefined && JSON.stringify(sorted(p.series.tags)) !== JSON.stringify(sorted(w.tags))) return false;
  return w.ts === undefined || ts === w.ts;
}
const sorted = (t: Record<string, string>) => Object.fromEntries(Object.entries(t).sort(([a], [b]) => a.localeCompare(b)));

describe('DogStatsD datagrams: parser cases', () => {
  for (const c of CASES) {
    test(c.what, () => {
      const { msgs, events, a } = run(c.lines);
      const points = msgs.flatMap((m) => m.points.map((p) => ({ p, ts: m.ts })));
      assert.equal(points.length, c.points?.length ?? 0, `points: ${JSON.stringify(points.map(({ p }) => [p.series.name, p.series.tags]))}`);
      for (const w of c.points ?? []) {
        const hit = points.find(({ p, ts }) => matches(p, ts, w));
        assert.ok(hit, `no point ${JSON.stringify(w)}`);
        const { p } = hit;
        if (w.kind !== undefined) assert.equal(p.series.kind, w.kind, 'kind');
        if (w.count !== undefined) assert.equal(p.count, w.count, 'count');
        if (w.sum !== undefined) assert.equal(p.sum, w.sum, 'sum');
        if (w.last !== undefined) assert.equal(p.last, w.last, 'last');
      }
      assert.equal(events.length, c.events?.length ?? 0, 'events');
      for (const [i, w] of (c.events ?? []).entries()) {
        const e = events[i] as EventPack;
        if (w.type !== undefined) assert.equal(e.type, w.type);
        if (w.message !== undefined) assert.equal(e.message, w.message);
        if (w.ts !== undefined) assert.equal(e.ts, w.ts);
        if (w.attributes !== undefined) assert.deepEqual(e.attributes, w.attributes);
      }
      const invalid = c.invalid ?? {};
      assert.deepEqual(a.counts.invalidByReason, invalid);
      assert.equal(
        a.counts.invalid,
        Object.values(invalid).reduce((s, n) => s + n, 0),
      );
      assert.equal(a.counts.lines, c.lines.length);
    });
  }
});

describe('DogStatsD aggregation', () => {
  test('a set counts distinct members over the reporting interval, across flush windows, and starts afresh in the next', () => {
    // Reporting intervals of 1000 ms; windows are taken at chosen times.
    const a = new DogStatsdAggregator({ intervalOf: (ts: number) => Math.floor(ts / 1000) * 1000 });
    const last = (ms: MetricsMessage[]) => ms.flatMap((m) => m.points).find((p) => p.series.name === 'u')?.last;
    a.take(1, 10_000); // the window now starts at 10 000
    a.packet(Buffer.from('u:a|s\nu:b|s'));
    assert.equal(last(a.take(1, 10_400)), 2);
    a.packet(Buffer.from('u:b|s\nu:c|s'));
    assert.equal(last(a.take(2, 10_800)), 3, 'b was seen in the interval already');
    a.packet(Buffer.from('u:c|s'));
    assert.equal(last(a.take(3, 11_200)), 3, 'the window started at 10 800: still the same interval');
    a.packet(Buffer.from('u:c|s'));
    assert.equal(last(a.take(4, 11_600)), 1, 'a new interval');
  });

  test('histogram quantiles stay within 1% with packed and sampled values', () => {
    const a = new DogStatsdAggregator();
    a.packet(Buffer.from('lat:10:20|ms\nlat:30|h|@0.5\nlat:40|d'));
    const p = a.take(1, Date.now()).flat()[0]?.points[0];
    assert.equal(p?.count, 5);
    assert.equal(p?.sketch?.count, 5);
    assert.ok(Math.abs((p?.sketch?.quantile(0.5) ?? 0) - 30) / 30 <= 0.01);
  });

  test('lines stamped with |T go out as their own messages, seqs after the window', () => {
    const a = new DogStatsdAggregator();
    a.packet(Buffer.from('x:1|c\nx:1|c|T1700000010\nx:1|c|T1700000000\nx:2|c|T1700000010'));
    const msgs = a.take(7, Date.now());
    assert.deepEqual(
      msgs.map((m) => [m.seq, m.points[0]?.sum]),
      [
        [7, 1],
        [8, 1],
        [9, 3],
      ],
    );
    assert.equal(msgs[1]?.ts, 1700000000000);
  });

  test('CRLF line ends and blank lines are accepted', () => {
    const { a, msgs } = run(['x:1|c\r', '', 'x:2|c\r']);
    assert.equal(a.counts.invalid, 0);
    assert.equal(msgs[0]?.points[0]?.sum, 3);
  });

  test('a malformed line amid good ones loses only itself', () => {
    const { a, msgs } = run(['good:1|c', 'bad:x|c', 'good:1|c', '_sc|svc|9', 'good:1|c']);
    assert.equal(msgs[0]?.points[0]?.sum, 3);
    assert.deepEqual(a.counts.invalidByReason, { bad_value: 1, bad_service_check: 1 });
  });

  test('the first refused line of each reason is reported once, for the log', () => {
    const first: [string, string][] = [];
    const a = new DogStatsdAggregator({ onFirstInvalid: (reason: string, line: string) => first.push([reason, line]) });
    a.packet(Buffer.from('a:x|c\nb:y|c\nc:1|zz\nd:z|g'));
    assert.deepEqual(first, [
      ['bad_value', 'a:x|c'],
      ['bad_type', 'c:1|zz'],
    ]);
    assert.deepEqual(a.counts.invalidByReason, { bad_value: 3, bad_type: 1 });
  });

  test('an empty window yields nothing', () => {
    assert.deepEqual([new DogStatsdAggregator().take(1, Date.now())].flat().filter(Boolean), []);
  });
});
