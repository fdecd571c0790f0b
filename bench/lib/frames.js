'use strict';
/**
 * Pre-built IPC frames for the ingest bench, encoded with the product's own proto
 * codecs. Deterministic: the same child index gives the same bytes in every run,
 * and the sidecar run and the raw-socket run of a scenario send identical bytes.
 *
 *   metrics  a shim's flush: SERIES series per child, POINTS_PER_FRAME points per
 *            frame (60% histograms, 20% counters, 20% gauges); every point
 *            aggregates SAMPLES_PER_POINT recorded values (count = 100), histogram
 *            values log-normal (median 20 ms, sigma 0.5) → realistic sketches.
 *   traces   finished transactions (ProfilePack) with 6 steps each.
 *   events   events with 3 attributes.
 */
const { join, resolve } = require('node:path');
const { latencies, rng } = require('./stats');

const ROOT = resolve(__dirname, '../..');
const proto = require(join(ROOT, 'proto/dist/index.js'));

const SERIES = 1000;
const POINTS_PER_FRAME = 100;
const SAMPLES_PER_POINT = 100;
const ROUTES = ['/pay', '/cart', '/login', '/search', '/orders', '/items', '/profile', '/health', '/checkout', '/refund'];

function hello(instanceId, childIndex) {
  return proto.encodeHello({
    v: proto.PROTOCOL_VERSION,
    app: `bench-${childIndex}`,
    pid: process.pid,
    shimVersion: '0.1.0',
    instanceId,
    // Stable per instance, so a bench child that reconnects is the same instance to the sidecar.
    secret: require('node:crypto').createHash('sha256').update(`bench:${instanceId}`).digest('hex'),
    seq: 0,
    host: 'bench',
    runtime: `node ${process.version}`,
  });
}

function metricPoint(childIndex, s, values) {
  const kindSlot = s % 10; // 0-5 histogram, 6-7 counter, 8-9 gauge
  const kind = kindSlot < 6 ? proto.MetricKind.Histogram : kindSlot < 8 ? proto.MetricKind.Counter : proto.MetricKind.Gauge;
  const name = kind === proto.MetricKind.Histogram ? 'http.server.duration' : kind === proto.MetricKind.Counter ? 'http.server.requests' : 'pool.in_use';
  const tags = { proc: String(childIndex), route: `${ROUTES[s % ROUTES.length]}/${Math.floor(s / 10)}`, status: '200' };
  const series = { key: '', kind, name, tags };
  let sum = 0;
  let min = Number.POSITIVE_INFINITY;
  let max = Number.NEGATIVE_INFINITY;
  let sketch = null;
  if (kind === proto.MetricKind.Histogram) sketch = new proto.Sketch();
  for (const v0 of values) {
    const v = kind === proto.MetricKind.Counter ? 1 : kind === proto.MetricKind.Gauge ? Math.round(v0) : v0;
    sum += v;
    if (v < min) min = v;
    if (v > max) max = v;
    if (sketch !== null) sketch.add(v);
  }
  return { series, count: values.length, sum, min, max, last: kind === proto.MetricKind.Gauge ? Math.round(values[values.length - 1]) : Number.NaN, sketch };
}

/** SERIES / POINTS_PER_FRAME metrics frames (seq and ts are patched in before each send). */
function metricsFrames(childIndex) {
  const frames = [];
  let seed = 1000 + childIndex * 100_000;
  for (let f = 0; f < SERIES / POINTS_PER_FRAME; f++) {
    const points = [];
    for (let p = 0; p < POINTS_PER_FRAME; p++) {
      const s = f * POINTS_PER_FRAME + p;
      points.push(metricPoint(childIndex, s, latencies(SAMPLES_PER_POINT, seed++)));
    }
    frames.push(proto.encodeMetrics({ seq: 1, ts: Date.now(), windowMs: 1000, points }));
  }
  return { frames, pointsPerFrame: POINTS_PER_FRAME, samplesPerPoint: SAMPLES_PER_POINT };
}

const hex = (r, n) => {
  let s = '';
  for (let i = 0; i < n; i++) s += Math.floor(r() * 16).toString(16);
  return s;
};

function traceFrames(childIndex, n = 256) {
  const r = rng(7 + childIndex);
  const frames = [];
  for (let i = 0; i < n; i++) {
    const start = 1_700_000_000_000 + i * 13;
    const steps = [
      { type: 'http', text: 'GET http://inventory.internal/items?sku=123456', durationMs: 4.2, offsetMs: 1.1 },
      { type: 'sql', text: 'SELECT id, sku, price, stock FROM items WHERE sku = $1 AND region = $2', durationMs: 2.7, offsetMs: 6.0 },
      { type: 'sql', text: 'UPDATE carts SET total = $1, updated_at = now() WHERE id = $2', durationMs: 1.9, offsetMs: 9.1 },
      { type: 'cache', text: 'GET session:8f2c1e', durationMs: 0.3, offsetMs: 11.4 },
      { type: 'http', text: 'POST http://payments.internal/authorize', durationMs: 18.5, offsetMs: 12.0 },
      { type: 'sql', text: 'INSERT INTO orders (id, cart_id, total, status) VALUES ($1, $2, $3, $4)', durationMs: 3.1, offsetMs: 31.0 },
    ];
    frames.push(
      proto.encodeTrace({
        txid: hex(r, 16),
        traceId: hex(r, 32),
        spanId: hex(r, 16),
        parentSpanId: hex(r, 16),
        name: `POST ${ROUTES[i % ROUTES.length]}`,
        startTime: start,
        durationMs: 35 + r() * 10,
        steps,
      }),
    );
  }
  return frames;
}

function eventFrames(childIndex, n = 256) {
  const r = rng(11 + childIndex);
  const frames = [];
  for (let i = 0; i < n; i++) {
    frames.push(
      proto.encodeEvent({
        ts: 1_700_000_000_000 + i,
        type: i % 4 === 0 ? 'deploy' : 'error',
        message: `payment authorization failed for order ${hex(r, 12)}: upstream timeout`,
        attributes: { route: ROUTES[i % ROUTES.length], status: 504, retried: i % 2 === 0 },
      }),
    );
  }
  return frames;
}

module.exports = { proto, hello, metricsFrames, traceFrames, eventFrames, SERIES, POINTS_PER_FRAME, SAMPLES_PER_POINT };
