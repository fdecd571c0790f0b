import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DogStatsdAggregator } from '@apm-sidecar/sidecar';

function one(lines: string[]) {
  const a = new DogStatsdAggregator();
  for (const l of lines) a.line(l);
  return { a, msg: a.take(1, Date.now()) };
}

describe('DogStatsD lines', () => {
  test('counters add up and are scaled by the sample rate', () => {
    const { msg } = one(['page.views:1|c', 'page.views:2|c|#route:/a', 'page.views:1|c|@0.5|#route:/a']);
    const byTags = new Map(msg?.points.map((p) => [JSON.stringify(p.series.tags), p]));
    assert.equal(byTags.get('{}')?.sum, 1);
    assert.equal(byTags.get('{"route":"/a"}')?.sum, 4);
    assert.equal(byTags.get('{"route":"/a"}')?.count, 2);
  });

  test('gauges keep the last value; timings, histograms and distributions share one sketch per series', () => {
    const { msg } = one(['pool:3|g', 'pool:8|g', 'lat:10|ms', 'lat:20|h', 'lat:30|d']);
    const pool = msg?.points.find((p) => p.series.name === 'pool');
    assert.equal(pool?.last, 8);
    const lat = msg?.points.find((p) => p.series.name === 'lat');
    assert.equal(lat?.count, 3);
    assert.equal(lat?.sketch?.count, 3);
    assert.ok(Math.abs((lat?.sketch?.quantile(0.5) ?? 0) - 20) / 20 <= 0.01);
  });

  test('tags: key:value, bare tags, several in one field; series differ by tags', () => {
    const { msg } = one(['x:1|c|#env:prod,canary', 'x:1|c|#env:dev']);
    assert.deepEqual(
      msg?.points.map((p) => p.series.tags).sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b))),
      [{ env: 'dev' }, { canary: '', env: 'prod' }],
    );
  });

  test('invalid and unsupported lines are counted, never thrown', () => {
    const a = new DogStatsdAggregator();
    a.packet(Buffer.from('nocolon|c\nx:abc|c\nx:1|zz\nx:1|c|@2\nusers:alice|s\n_e{5,4}:title|text\n_sc|svc|0\ngood:1|c\n'));
    assert.deepEqual(a.counts, { packets: 1, lines: 8, invalid: 4, unsupported: 3 });
    assert.equal(a.take(1, Date.now())?.points.length, 1);
  });

  test('an empty window yields nothing', () => {
    assert.equal(new DogStatsdAggregator().take(1, Date.now()), null);
  });
});
