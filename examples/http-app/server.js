'use strict';
/**
 * An instrumented HTTP service (plain node:http) that shows every part of the
 * @apm-sidecar/shim API. Its "database" and "cache" are timers, so it needs
 * nothing but Node.
 *
 *   GET /pay        transaction with sql + cache steps, an outgoing call to /inventory
 *                   carrying tx.outgoingHeaders(), a business counter
 *   GET /orders     transaction with a few sql steps
 *   GET /slow       a long transaction; sends an active stack while it runs
 *   GET /fail       ends the transaction with an error, answers 500
 *   GET /inventory  the "downstream service": answers with the correlation
 *                   headers it received (traceparent, apm-correlation)
 *   GET /stats      the shim's own counters (apm.stats())
 *
 * Environment:
 *   APM_SIDECAR_SOCKET  the sidecar's socket (else the shim's default locations)
 *   PORT                default 0 = any free port; the port is printed on stdout
 *                       as one JSON line: {"listening": PORT}
 *   HOST                default 127.0.0.1
 *   SNAPSHOT_MS         period of the app snapshot, default 2000
 *
 * Build at the repository root first (`npm run build` or `make build`: tsc, then the
 * shim bundle): '@apm-sidecar/shim' resolves to the workspace package in the root
 * node_modules, whose entry point is the bundle client-shim/dist/shim.js.
 */
const http = require('node:http');
const { connect } = require('@apm-sidecar/shim');

const VERSION = '1.4.2';
const HOST = process.env.HOST || '127.0.0.1';
const PORT = intEnv('PORT', 0, 0, 65535);
const SNAPSHOT_MS = intEnv('SNAPSHOT_MS', 2000, 100, 3_600_000);
/** Where the app calls itself (the /inventory "downstream"): loopback when listening on every address. */
const SELF_HOST = HOST === '0.0.0.0' || HOST === '::' ? '127.0.0.1' : HOST;

function intEnv(name, fallback, min, max) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) {
    process.stderr.write(`http-app: ${name}=${JSON.stringify(raw)} must be an integer ${min}..${max}\n`);
    process.exit(2);
  }
  return n;
}

// --- instrumentation set-up ---------------------------------------------------

const apm = connect({ app: 'example-shop' });

const ROUTES = ['GET /pay', 'GET /orders', 'GET /slow', 'GET /fail', 'GET /inventory'];

// Business transactions are registered once. Durable: the shim keeps each one until the sidecar acks it.
for (const name of ROUTES) apm.registerBusinessTransaction(name);

// Bound handles, created once and reused: recording is a few field updates.
const latency = new Map();
const requests = new Map();
for (const name of ROUTES) {
  const route = name.split(' ')[1];
  latency.set(route, apm.histogram('http.server.duration', { route }));
}
/** One counter per (route, status class), bound on first use. */
function requestCounter(route, status) {
  const key = `${route} ${status}`;
  let c = requests.get(key);
  if (c === undefined) {
    c = apm.counter('http.server.requests', { route, status: `${Math.floor(status / 100)}xx` });
    requests.set(key, c);
  }
  return c;
}
const ordersCreated = { eu: apm.counter('orders.created', { region: 'eu' }), us: apm.counter('orders.created', { region: 'us' }) };
const inflightGauge = apm.gauge('http.server.inflight');
const poolSize = apm.gauge('db.pool.size');
const cacheHits = apm.counter('cache.requests', { result: 'hit' });
const cacheMisses = apm.counter('cache.requests', { result: 'miss' });

apm.event({ type: 'deploy', message: `example-shop v${VERSION} started`, attributes: { version: VERSION, pid: process.pid, node: process.version } });

// --- fake back ends -----------------------------------------------------------

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const between = (lo, hi) => lo + Math.random() * (hi - lo);

/** Runs a pretend SQL statement and records it as a step of the transaction. */
async function sql(tx, text, lo, hi) {
  const t0 = performance.now();
  await sleep(between(lo, hi));
  tx.step('sql', text, performance.now() - t0);
}

/** A pretend cache lookup: mostly hits. */
async function cacheGet(tx, key) {
  const t0 = performance.now();
  await sleep(between(0.1, 1));
  const hit = Math.random() < 0.8;
  (hit ? cacheHits : cacheMisses).add(1);
  tx.step('cache', `GET ${key} (${hit ? 'hit' : 'miss'})`, performance.now() - t0);
  return hit;
}

const downstreamAgent = new http.Agent({ keepAlive: true, maxSockets: 32 });

/** An outgoing HTTP call to this same service's /inventory, with the correlation headers. */
function callInventory(tx, port, sku) {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const req = http.get(
      { host: SELF_HOST, port, path: `/inventory?sku=${encodeURIComponent(sku)}`, headers: tx.outgoingHeaders(), agent: downstreamAgent, timeout: 5000 },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c) => {
          body += c;
        });
        res.on('end', () => {
          tx.step('http', `GET http://${SELF_HOST}:${port}/inventory?sku=${sku} → ${res.statusCode}`, performance.now() - t0);
          try {
            resolve(JSON.parse(body));
          } catch (err) {
            reject(err);
          }
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error('inventory call timed out')));
    req.on('error', reject);
  });
}

// --- routes -------------------------------------------------------------------

const handlers = {
  async '/pay'(tx, _req, _url, port) {
    const region = Math.random() < 0.6 ? 'eu' : 'us';
    const sku = `sku-${1 + Math.floor(Math.random() * 50)}`;
    if (!(await cacheGet(tx, `price:${sku}`))) await sql(tx, 'SELECT price FROM products WHERE sku = ?', 1, 6);
    const inventory = await callInventory(tx, port, sku);
    await sql(tx, 'INSERT INTO orders (sku, region, amount) VALUES (?, ?, ?)', 2, 10);
    ordersCreated[region].add(1);
    return { status: 200, body: { ok: true, sku, region, inventory } };
  },

  async '/orders'(tx) {
    await sql(tx, 'SELECT id, sku, amount FROM orders WHERE customer_id = ? ORDER BY id DESC LIMIT 20', 1, 8);
    await cacheGet(tx, 'customer:42');
    await sql(tx, 'SELECT count(*) FROM orders WHERE customer_id = ?', 0.5, 3);
    return { status: 200, body: { orders: 20 } };
  },

  async '/slow'(tx) {
    await sql(tx, 'SELECT * FROM ledger WHERE day = ?', 5, 10);
    // Part-way through the long query, report where the request is busy.
    const t0 = performance.now();
    const query = sleep(between(300, 500));
    await sleep(150);
    apm.activeStack(tx, [
      'at Ledger.reconcile (examples/http-app/ledger.js:88:11)',
      'at async ReportService.daily (examples/http-app/report.js:41:5)',
      'at async handlers./slow (examples/http-app/server.js)',
      'at async Server.<anonymous> (node:http)',
    ]);
    await query;
    tx.step('sql', 'SELECT sum(amount) FROM ledger GROUP BY account -- full scan', performance.now() - t0);
    return { status: 200, body: { report: 'ready' } };
  },

  async '/fail'(tx) {
    await sql(tx, 'UPDATE stock SET qty = qty - 1 WHERE sku = ?', 1, 4);
    throw new Error('payment gateway refused the card');
  },

  async '/inventory'(tx, req, url) {
    await sql(tx, 'SELECT qty FROM stock WHERE sku = ?', 0.5, 3);
    return {
      status: 200,
      body: {
        sku: url.searchParams.get('sku'),
        stock: Math.floor(between(0, 100)),
        // What the caller sent: shows the correlation headers travelling.
        received: { 'apm-correlation': req.headers['apm-correlation'] ?? null, traceparent: req.headers.traceparent ?? null },
      },
    };
  },
};

let inflight = 0;

const server = http.createServer((req, res) => {
  const url = new URL(req.url || '/', 'http://localhost');
  if (req.method === 'GET' && url.pathname === '/stats') {
    res.writeHead(200, { 'content-type': 'application/json' }).end(`${JSON.stringify(apm.stats())}\n`);
    return;
  }
  const handler = req.method === 'GET' && Object.hasOwn(handlers, url.pathname) ? handlers[url.pathname] : undefined;
  if (handler === undefined) {
    res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"not found"}\n');
    return;
  }
  const route = url.pathname;
  // A no-op transaction comes back when the caller sent notxdetect=true or the sidecar is in standby/muted.
  const tx = apm.startTransaction(`GET ${route}`, req.headers);
  const t0 = performance.now();
  inflightGauge.set(++inflight);
  handler(tx, req, url, server.address().port).then(
    (r) => finish(r.status, r.body),
    (err) => finish(500, { error: err.message }, err),
  );

  function finish(status, body, error) {
    const ms = performance.now() - t0;
    tx.end(error === undefined ? undefined : { error });
    latency.get(route).record(ms);
    requestCounter(route, status).add(1);
    inflightGauge.set(--inflight);
    res.writeHead(status, { 'content-type': 'application/json' }).end(`${JSON.stringify(body)}\n`);
  }
});
server.keepAliveTimeout = 5000;

// A periodic snapshot of the process: what an operator wants to see next to the metrics.
const snapshotTimer = setInterval(() => {
  const m = process.memoryUsage();
  poolSize.set(8);
  apm.snapshot({ uptimeS: Math.round(process.uptime()), inflight, rssBytes: m.rss, heapUsedBytes: m.heapUsed, shim: apm.stats() }, 'process');
}, SNAPSHOT_MS);
snapshotTimer.unref();

server.listen(PORT, HOST, () => {
  process.stdout.write(`${JSON.stringify({ listening: server.address().port })}\n`);
});
server.on('error', (err) => {
  process.stderr.write(`http-app: ${err.message}\n`);
  process.exit(1);
});

let stopping = false;
function stop(signal) {
  if (stopping) return;
  stopping = true;
  apm.event({ type: 'shutdown', message: `example-shop stopping on ${signal}` });
  clearInterval(snapshotTimer);
  server.close();
  server.closeIdleConnections();
  downstreamAgent.destroy();
  // flush() sends the metrics aggregated so far and waits for the sidecar's ack (at most
  // 2 s), then close() writes what is still queued (at most closeTimeoutMs). The shim keeps
  // the process alive only while they are awaited; the 5 s timer is a backstop.
  const hold = setTimeout(() => process.exit(0), 5000);
  apm
    .flush(2000)
    .then((acked) => apm.close().then(() => acked))
    .then((acked) => {
      clearTimeout(hold);
      const s = apm.stats();
      process.stderr.write(
        `http-app: stopped; metrics ${acked ? 'acked' : 'not acked'} by the sidecar; shim sent ${s.sent} frames, ${s.acked} acked, dropped ${JSON.stringify(s.dropped)}\n`,
      );
      process.exit(0);
    });
}
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));
