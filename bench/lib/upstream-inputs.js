'use strict';
/**
 * Pre-built upstream bodies for bench/upstream.js, encoded with the product's
 * own proto encoders. Deterministic (seeded PRNG).
 *
 *   metric body  encodeMetricBatch-compatible: MetricBatch of packs of up to
 *                POINTS_PER_PACK points (one pack = one shim's flush: 60%
 *                histograms with real Sketch objects, 20% counters, 20% gauges;
 *                every point aggregates SAMPLES_PER_POINT values), filled to at
 *                most `maxBody` bytes. Every pack id and interval start sits at a
 *                known offset, and `patch(frameNo)` rewrites them in place so frame
 *                n carries new packs for interval `base + n × 10 s` (the collector
 *                stores each frame as new interval rows and merges six frames into
 *                each minute rollup, as for a live agent's stream; nothing is a
 *                duplicate, and with `base` = the current minute nothing is late).
 *   trace body   encodeTextBatch of trace items (ProfilePack with 6 steps), filled
 *                to at most `maxBody` bytes; a few distinct bodies, rotated.
 */
const { join, resolve } = require('node:path');
const { latencies, rng } = require('./stats');

const ROOT = resolve(__dirname, '../..');
const proto = require(join(ROOT, 'proto/dist/index.js'));
const up = require(join(ROOT, 'proto/dist/upstream/index.js'));

const POINTS_PER_PACK = 100;
const SAMPLES_PER_POINT = 100;
const INTERVAL_MS = 10_000;
/** Only for trace start times; metric intervals start at metricBody's `base`. */
const BASE_INTERVAL = Date.UTC(2025, 0, 1);
const ROUTES = ['/pay', '/cart', '/login', '/search', '/orders', '/items', '/profile', '/health', '/checkout', '/refund'];
/** Fixed width so patching never moves bytes: "f" + 10 digits + "-" + 3 digits. */
const PACK_ID_WIDTH = 15;

function series(kind, name, tags) {
  const bytes = proto.encodeSeries(kind, name, tags);
  return { key: proto.seriesKey(bytes), kind, name, tags };
}

function metricPoint(proc, s, values, host) {
  const slot = s % 10; // 0-5 histogram, 6-7 counter, 8-9 gauge
  const kind = slot < 6 ? proto.MetricKind.Histogram : slot < 8 ? proto.MetricKind.Counter : proto.MetricKind.Gauge;
  const name = kind === proto.MetricKind.Histogram ? 'http.server.duration' : kind === proto.MetricKind.Counter ? 'http.server.requests' : 'pool.in_use';
  const tags = { proc: String(proc), route: `${ROUTES[s % ROUTES.length]}/${Math.floor(s / 10)}`, status: '200' };
  if (host !== undefined) tags.host = host;
  let sum = 0;
  let min = Number.POSITIVE_INFINITY;
  let max = Number.NEGATIVE_INFINITY;
  const sketch = kind === proto.MetricKind.Histogram ? new proto.Sketch() : null;
  for (const v0 of values) {
    const v = kind === proto.MetricKind.Counter ? 1 : kind === proto.MetricKind.Gauge ? Math.round(v0) : v0;
    sum += v;
    if (v < min) min = v;
    if (v > max) max = v;
    if (sketch !== null) sketch.add(v);
  }
  const last = kind === proto.MetricKind.Gauge ? Math.round(values[values.length - 1]) : Number.NaN;
  return { series: series(kind, name, tags), count: values.length, sum, min, max, last, sketch };
}

const packId = (frameNo, i) => `f${String(frameNo).padStart(10, '0')}-${String(i).padStart(3, '0')}`;

/**
 * One metric body of at most maxBody bytes, with `patch(frameNo)` to make it a new
 * frame in place. `base`: interval start of frame 0 (ms, a multiple of INTERVAL_MS).
 * `host`: a `host` tag on every series (distinct agents send distinct series).
 */
function metricBody(maxBody, base = Math.floor(Date.now() / 60_000) * 60_000, host = undefined) {
  const packs = [];
  let seed = 4242;
  let size = 1; // the pack count varint (< 128 packs)
  let full = false;
  for (let proc = 0; !full && proc < 100; proc++) {
    const pack = { packId: packId(0, proc), intervalStart: base, intervalMs: INTERVAL_MS, points: [] };
    size += 1 + PACK_ID_WIDTH + 8 + 3 + 2; // id, interval start, interval ms, point count
    if (size > maxBody) break;
    for (let s = 0; s < POINTS_PER_PACK; s++) {
      const pt = metricPoint(proc, s, latencies(SAMPLES_PER_POINT, seed++), host);
      const w = new proto.Writer(512);
      proto.writePoint(w, Buffer.from(pt.series.key, 'latin1'), pt.count, pt.sum, pt.min, pt.max, pt.last, pt.sketch);
      if (size + w.length > maxBody) {
        full = true;
        break;
      }
      size += w.length;
      pack.points.push(pt);
    }
    if (pack.points.length > 0) packs.push(pack);
  }
  const body = up.encodeMetricBatch(packs);
  if (body.length > maxBody) throw new Error(`metric body ${body.length} > ${maxBody}`);
  // Find each pack's id and interval start: the ids are unique fixed-width ASCII.
  const offsets = packs.map((p) => {
    const at = body.indexOf(Buffer.from(p.packId, 'latin1'));
    if (at < 0 || body.readDoubleLE(at + PACK_ID_WIDTH) !== base) throw new Error('pack layout not as expected');
    return at;
  });
  const points = packs.reduce((n, p) => n + p.points.length, 0);
  return {
    body,
    packs: packs.length,
    points,
    histograms: packs.reduce((n, p) => n + p.points.filter((x) => x.sketch !== null).length, 0),
    /** Rewrite pack ids and interval start for frame `frameNo` (call before each send; sealing copies). */
    patch(frameNo) {
      const start = base + frameNo * INTERVAL_MS;
      for (let i = 0; i < offsets.length; i++) {
        body.write(packId(frameNo, i), offsets[i], 'latin1');
        body.writeDoubleLE(start, offsets[i] + PACK_ID_WIDTH);
      }
    },
  };
}

const hex = (r, n) => {
  let s = '';
  for (let i = 0; i < n; i++) s += Math.floor(r() * 16).toString(16);
  return s;
};

const STEP_KINDS = [
  ['sql', (r) => `SELECT id, status, amount FROM orders WHERE customer_id = ? AND created_at > ? LIMIT ${10 + Math.floor(r() * 90)}`],
  ['http', (r) => `GET http://inventory.internal:8080/items/${Math.floor(r() * 100000)}`],
  ['method', () => 'OrderService.validate'],
  ['sql', () => 'UPDATE carts SET updated_at = ? WHERE id = ?'],
  ['cache', (r) => `GET session:${hex(r, 16)}`],
  ['method', () => 'PaymentClient.authorize'],
];

function traceItem(r, i) {
  const durations = latencies(6, 9000 + i, 4, 0.7);
  let offset = 0;
  const steps = STEP_KINDS.map(([type, text], k) => {
    const s = { type, text: text(r), durationMs: Number(durations[k].toFixed(3)), offsetMs: Number(offset.toFixed(3)) };
    offset += durations[k] + r();
    return s;
  });
  const route = ROUTES[i % ROUTES.length];
  const trace = {
    txid: hex(r, 16),
    traceId: hex(r, 32),
    spanId: hex(r, 16),
    parentSpanId: hex(r, 16),
    name: `POST ${route}`,
    startTime: BASE_INTERVAL + i * 37,
    durationMs: Number((offset + 1).toFixed(3)),
    steps,
  };
  if (i % 20 === 0) trace.error = 'Error: upstream timeout after 3000 ms';
  return { kind: 'trace', origin: { app: `shop-${i % 4}`, instanceId: hex(r, 12), pid: 1000 + (i % 4) }, trace };
}

/** `count` distinct trace bodies of at most maxBody bytes each. */
function traceBodies(maxBody, count) {
  const out = [];
  const r = rng(77);
  let i = 0;
  for (let b = 0; b < count; b++) {
    const items = [];
    // JSON: {"items":[a,b,...]}
    let size = '{"items":[]}'.length;
    for (;;) {
      const it = traceItem(r, i++);
      const n = Buffer.byteLength(JSON.stringify(it)) + (items.length > 0 ? 1 : 0);
      if (size + n > maxBody) break;
      size += n;
      items.push(it);
    }
    const body = up.encodeTextBatch(items);
    if (body.length > maxBody) throw new Error(`trace body ${body.length} > ${maxBody}`);
    out.push({ body, traces: items.length });
  }
  return out;
}

module.exports = { metricBody, traceBodies, INTERVAL_MS };
