'use strict';
/**
 * The datagrams of bench (i): StatsD lines with DogStatsD tags, packed into ~1.4 KB UDP payloads
 * (the usual client buffer, e.g. hot-shots' maxBufferSize 1432). Every line is one both receivers
 * read the same way: `name:value|type[|@rate]|#k:v,…` (Etsy statsd 0.9.0 takes the `|#` tags as the
 * last field and folds them into the key; the sidecar makes them the series' tags).
 *
 * Mix per line: 50% timers (`ms`, log-normal milliseconds), 30% counters (`c`, 1 in 5 sampled at
 * `@0.5`), 20% gauges (`g`). `series` distinct (name, type, tags) identities, 4 tags each. Seeded, so
 * every run and both receivers get the same bytes.
 */
const { rng } = require('./stats');

const PAYLOAD = 1432;
const ROUTES = ['/api/v1/items/{id}', '/api/v1/cart', '/api/v1/checkout', '/login', '/health', '/api/v2/search', '/static/{file}', '/api/v1/users/{id}'];

/** The identity (line without its value) of series `i` out of `n`. */
function seriesOf(i) {
  const kind = i % 10 < 5 ? 'ms' : i % 10 < 8 ? 'c' : 'g';
  const metric = kind === 'ms' ? 'http.server.duration' : kind === 'c' ? 'http.server.requests' : 'pool.connections.active';
  const svc = `svc-${(i >> 3) % 40}`;
  const route = ROUTES[i % ROUTES.length];
  const status = [200, 201, 404, 500][(i >> 2) % 4];
  return { kind, name: `shop.${metric}.${i % 97}`, tags: `env:prod,service:${svc},route:${route},status:${status},host:web-${i}` };
}

/**
 * `packets` datagrams of at most PAYLOAD bytes, lines drawn round-robin over `series` identities
 * (so each series gets the same share), values from a seeded PRNG.
 */
function buildPackets({ series = 1000, packets = 2000, seed = 42 } = {}) {
  const r = rng(seed);
  const ids = Array.from({ length: Math.min(series, 1e6) }, (_, i) => seriesOf(i));
  const out = [];
  let next = 0;
  let lines = 0;
  for (let p = 0; p < packets; p++) {
    const parts = [];
    let size = 0;
    for (;;) {
      const s = ids[next % ids.length];
      let value;
      let rate = '';
      if (s.kind === 'ms') {
        const u = 1 - r();
        const z = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * r());
        value = (20 * Math.exp(0.5 * z)).toFixed(3);
      } else if (s.kind === 'c') {
        value = '1';
        if (next % 5 === 0) rate = '|@0.5';
      } else {
        value = String(Math.floor(r() * 200));
      }
      const line = `${s.name}:${value}|${s.kind}${rate}|#${s.tags}`;
      const add = Buffer.byteLength(line) + (parts.length > 0 ? 1 : 0);
      if (size + add > PAYLOAD) break;
      parts.push(line);
      size += add;
      next++;
    }
    lines += parts.length;
    out.push({ buf: Buffer.from(parts.join('\n')), lines: parts.length });
  }
  return { packets: out, lines, bytes: out.reduce((a, p) => a + p.buf.length, 0) };
}

module.exports = { buildPackets, seriesOf, PAYLOAD };
