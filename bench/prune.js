'use strict';
/**
 * (i) Pruning by age never stalls ingest: the collector's SQLite store (SqliteStore, the product's
 * file, pragmas and migrations) holding days of old rows, agents' metric batches committed at a
 * steady rate, and the product's pruner (startPruner over SqlitePruner, as `apm-collector run`
 * wires it) deleting the old rows meanwhile, in the same process, as in the collector.
 *
 *   node bench/prune.js [--quick] [--points N] [--rate R] [--batch-points P] [--batches B,…]
 *                    [--window S] [--rounds R] [--json] [--tmp DIR]
 *
 *   --points        old metric points generated, spread over days 20–30 before now (default
 *                   2,000,000; --quick 200,000). With them, as the collector stores them: one
 *                   rollup row per 6 points, one pack id per 20 points, and traces (1 per 20
 *                   points, ~400 B each), events (1 per 100), snapshots and active stacks (1 per
 *                   1,000), inserted directly (one transaction per 50,000 rows)
 *   --rate          ingest batches per second (default 10); each is one storeMetrics call (one
 *                   IMMEDIATE transaction, fsync'd: synchronous = FULL) of one pack of P points
 *                   (--batch-points, default 500) from one of 500 agents in turn: 5,000 points/s,
 *                   a rate this store keeps up with on a loaded 2-core machine
 *   --batches       store_prune_batch_rows compared (default 1000,5000,50000)
 *   --window, --rounds  per batch size, R rounds (default 4; --quick 2) of a window of W seconds
 *                   (default 5; --quick 2) without pruning and one with it, the order flipped
 *                   each round
 *
 * Ingest runs throughout, at the steady rate. For each batch size B, windows without the pruner
 * and with it (startPruner, store_prune_interval_ms = 1, store_prune_batch_rows = B) alternate,
 * so the two are measured side by side under the same machine load. Each batch size prunes its
 * own share of the old rows, oldest first (the last one everything older than 15 days); a
 * pruner stopped at the end of its window finishes its batch under way.
 *
 * Ingest latency of a batch = commit time − the time the batch was due (its slot in the steady
 * schedule, each batch on its own timer), so a batch that waited behind a prune batch holding the
 * event loop (better-sqlite3 is synchronous) counts the wait. Reported: p50 / p99 / max, the
 * prune batches' own duration, and rows pruned per second of the windows with the pruner.
 */
const { mkdtempSync, rmSync } = require('node:fs');
const { tmpdir } = require('node:os');
const { join, resolve } = require('node:path');
const { performance } = require('node:perf_hooks');
const { num, quantile, table } = require('./lib/stats');

const ROOT = resolve(__dirname, '..');
const proto = require(join(ROOT, 'proto/dist/index.js'));
const { SqliteStore } = require(join(ROOT, 'collector/dist/index.js'));
const { SqlitePruner } = require(join(ROOT, 'collector/dist/store/prune.js'));
const { startPruner } = require(join(ROOT, 'collector/dist/store-pruner.js'));
const Database = require(require.resolve('better-sqlite3', { paths: [join(ROOT, 'collector')] }));

const DAY = 86_400_000;
const AGENTS = 500;
const SERIES_PER_AGENT = 20;

function arg(name, dflt) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
}
const quick = process.argv.includes('--quick');
const opts = {
  points: arg('--points', quick ? 200_000 : 2_000_000),
  rate: arg('--rate', 10),
  batchPoints: arg('--batch-points', 500),
  window: arg('--window', quick ? 2 : 5),
  rounds: arg('--rounds', quick ? 2 : 4),
  batches: (process.argv.includes('--batches') ? process.argv[process.argv.indexOf('--batches') + 1] : '1000,5000,50000').split(',').map(Number),
};

const seriesOf = (i) => {
  const tags = { route: `/r${i}` };
  return { key: proto.encodeSeries(proto.MetricKind.Counter, 'http.requests', tags).toString('latin1'), kind: proto.MetricKind.Counter, name: 'http.requests', tags };
};

/** Old rows, straight into the tables (what months of ingest would have left), oldest 30 days back. */
function generateOld(path, now) {
  const db = new Database(path);
  db.pragma('synchronous = NORMAL');
  const from = now - 30 * DAY;
  const span = 10 * DAY;
  const n = opts.points;
  const cols = 'agent_id, project_id, series_key, name, tags_json, kind, interval_start, interval_ms, count, sum, min, max, last, last_at, sketch';
  const point = db.prepare(`INSERT OR IGNORE INTO metric_points (${cols}) VALUES (?, 'p', ?, 'http.requests', ?, 1, ?, 10000, 1, 5, 5, 5, NULL, NULL, NULL)`);
  const rollup = db.prepare(`INSERT OR IGNORE INTO metric_rollups (${cols}) VALUES (?, 'p', ?, 'http.requests', ?, 1, ?, 60000, 6, 30, 5, 5, NULL, NULL, NULL)`);
  const pack = db.prepare(`INSERT OR IGNORE INTO metric_packs (agent_id, project_id, pack_id, received_at) VALUES (?, 'p', ?, ?)`);
  const trace = db.prepare(
    "INSERT INTO traces (project_id, agent_id, app, instance_id, txid, trace_id, name, start_time, duration_ms, error, body_json) VALUES ('p', ?, 'shop', 'i', ?, ?, 'GET /', ?, 12, NULL, ?)",
  );
  const event = db.prepare("INSERT INTO events (project_id, agent_id, app, instance_id, ts, type, message, body_json) VALUES ('p', ?, 'shop', 'i', ?, 'log', 'm', '{}')");
  const snapshot = db.prepare("INSERT INTO snapshots (project_id, agent_id, app, instance_id, ts, kind, body_json) VALUES ('p', ?, 'shop', 'i', ?, 'heap', '{}')");
  const stack = db.prepare(
    "INSERT INTO active_stacks (project_id, agent_id, app, instance_id, txid, name, ts, elapsed_ms, body_json) VALUES ('p', ?, 'shop', 'i', 't', 'GET /', ?, 5, '{}')",
  );
  const keys = Array.from({ length: SERIES_PER_AGENT }, (_, s) => Buffer.from(seriesOf(s).key, 'latin1'));
  const tags = Array.from({ length: SERIES_PER_AGENT }, (_, s) => JSON.stringify(seriesOf(s).tags));
  const body = JSON.stringify({ steps: Array.from({ length: 6 }, (_, i) => ({ name: `SELECT * FROM t${i} WHERE id = ?`, durationMs: 1 })) });
  let rows = 0;
  const chunk = db.transaction((lo, hi) => {
    for (let i = lo; i < hi; i++) {
      // Point i: agent, series and a time spread evenly over the 10 old days (rows of one
      // interval written together, as ingest does).
      const agent = `agent-${i % AGENTS}`;
      const s = Math.floor(i / AGENTS) % SERIES_PER_AGENT;
      const t = from + Math.floor((i / n) * span);
      const start = t - (t % 10_000);
      point.run(agent, keys[s], tags[s], start);
      rows++;
      if (i % 6 === 0) rows += rollup.run(agent, keys[s], tags[s], start - (start % 60_000)).changes;
      if (i % 20 === 0) {
        rows += pack.run(agent, `old-${i}`, t).changes;
        trace.run(agent, `tx${i}`, i.toString(16).padStart(32, '0'), t, body);
        rows++;
      }
      if (i % 100 === 0) rows += event.run(agent, t).changes;
      if (i % 1000 === 0) rows += snapshot.run(agent, t).changes + stack.run(agent, t).changes;
    }
  });
  for (let lo = 0; lo < n; lo += 50_000) chunk(lo, Math.min(n, lo + 50_000));
  db.pragma('wal_checkpoint(TRUNCATE)');
  db.close();
  return rows;
}

function summary(xs) {
  return xs.length === 0 ? { n: 0, p50: Number.NaN, p99: Number.NaN, max: Number.NaN } : { n: xs.length, p50: quantile(xs, 0.5), p99: quantile(xs, 0.99), max: Math.max(...xs) };
}

/**
 * Agents' batches arriving at the steady rate, each on its own timer (as frames from many
 * connections arrive independently: every batch due while the event loop was busy is committed
 * as soon as it is free, not one per turn), until `until()` says stop. Returns each batch's due
 * time and latency (commit done − due, ms).
 */
function ingest(store, state, until) {
  const period = 1000 / opts.rate;
  const lat = [];
  const t0 = performance.now();
  let k = 0;
  let outstanding = 0;
  return new Promise((resolve) => {
    const arrive = async (due) => {
      const agentId = `live-${state.seq % AGENTS}`;
      const now = Date.now();
      const points = Array.from({ length: opts.batchPoints }, (_, i) => ({ series: seriesOf(i), count: 1, sum: 3, min: 3, max: 3, last: Number.NaN, sketch: null }));
      const pack = { packId: `live-${state.seq++}`, intervalStart: now - (now % 10_000), intervalMs: 10_000, points };
      await store.storeMetrics({ projectId: 'p', agentId }, [pack], now);
      lat.push({ due, ms: performance.now() - due });
      if (--outstanding === 0 && stopped) resolve(lat);
    };
    let stopped = false;
    // Arrivals are scheduled 100 ms ahead, a window at a time.
    const windowMs = 100;
    const plan = () => {
      if (until()) {
        stopped = true;
        if (outstanding === 0) resolve(lat);
        return;
      }
      const end = performance.now() + windowMs;
      for (let due = t0 + k * period; due < end; due = t0 + ++k * period) {
        outstanding++;
        const d = due;
        setTimeout(() => void arrive(d), Math.max(0, d - performance.now()));
      }
      setTimeout(plan, windowMs / 2);
    };
    plan();
  });
}

/** The pruner over the store's database, on for one window: resolves when stopped (after its batch under way). */
function pruneWindow(db, retentionDays, batchRows, windowMs, acc) {
  const pruner = new SqlitePruner(db);
  const p = startPruner({
    store: {
      async prune(before, max) {
        const s = performance.now();
        const n = pruner.prune(before, max);
        acc.batchMs.push(performance.now() - s);
        acc.rows += n;
        return n;
      },
    },
    retentionDays,
    intervalMs: 1,
    batchRows,
    clock: proto.systemClock,
    log: {
      info() {},
      warn(o, m) {
        process.stderr.write(`[prune] ${m} ${JSON.stringify(o)}\n`);
      },
    },
  });
  return new Promise((resolve) => setTimeout(() => p.stop().then(resolve), windowMs));
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const dir = mkdtempSync(join(process.argv.includes('--tmp') ? process.argv[process.argv.indexOf('--tmp') + 1] : tmpdir(), 'apm-bench-prune-'));
  try {
    const now = Date.now();
    let store = await SqliteStore.open(dir);
    const path = store.path;
    await store.close();
    const g0 = performance.now();
    const oldRows = generateOld(path, now);
    const genSeconds = (performance.now() - g0) / 1000;
    process.stderr.write(`[prune] ${num(oldRows)} old rows generated in ${num(genSeconds, 1)} s\n`);
    store = await SqliteStore.open(dir);
    const db = new Database(path);
    db.pragma('busy_timeout = 5000');
    db.pragma('synchronous = FULL');
    const state = { seq: 0 };
    // Ingest runs throughout; windows with and without the pruner alternate (the order flips each
    // round), so a change of machine load falls on both alike. Each batch size prunes its own
    // share of the old rows (days 20–30 back), oldest first; the last one down to 15 days.
    const windows = [];
    let measuring = true;
    const ingesting = ingest(store, state, () => !measuring);
    const windowMs = opts.window * 1000;
    for (const [i, batchRows] of opts.batches.entries()) {
      const days = i === opts.batches.length - 1 ? 15 : 30 - (10 * (i + 1)) / opts.batches.length;
      const acc = { rows: 0, batchMs: [] };
      for (let round = 0; round < opts.rounds; round++) {
        for (const on of round % 2 === 0 ? [false, true] : [true, false]) {
          const w = { batchRows, on, from: performance.now(), to: 0 };
          if (on) await pruneWindow(db, days, batchRows, windowMs, acc);
          else await sleep(windowMs);
          w.to = performance.now();
          windows.push(w);
        }
      }
      windows.filter((w) => w.batchRows === batchRows && w.on).forEach((w) => Object.assign(w, { acc }));
    }
    measuring = false;
    const lat = await ingesting;
    const phases = [];
    for (const batchRows of opts.batches) {
      for (const on of [false, true]) {
        const ws = windows.filter((w) => w.batchRows === batchRows && w.on === on);
        const seconds = ws.reduce((a, w) => a + (w.to - w.from) / 1000, 0);
        const ms = lat.filter((l) => ws.some((w) => l.due >= w.from && l.due < w.to)).map((l) => l.ms);
        const acc = on ? ws[0].acc : { rows: 0, batchMs: [] };
        phases.push({
          name: on ? `pruning, ${num(batchRows)} rows/batch` : `  no pruning (windows between)`,
          batchRows,
          on,
          seconds,
          rows: acc.rows,
          rowsPerSec: acc.rows / seconds,
          batches: acc.batchMs.length,
          batch: summary(acc.batchMs),
          ingest: summary(ms),
        });
      }
    }
    const left = db.prepare('SELECT count(*) AS n FROM metric_points WHERE interval_start < ?').get(now - 15 * DAY).n;
    const load = require('node:os').loadavg()[0];
    db.close();
    await store.close();
    const res = { opts, oldRows, genSeconds, oldPointsLeft: left, phases, loadavg1: load };
    if (process.argv.includes('--json')) process.stdout.write(`${JSON.stringify(res, null, 2)}\n`);
    else process.stdout.write(report(res));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function report(r) {
  const f = (v, d = 1) => (Number.isFinite(v) ? num(v, d) : '—');
  const out = [
    `(i) pruning by age while agents write: SQLite collector store with ${num(r.oldRows)} old rows (${num(r.opts.points)} points over days 20–30 back); ingest ${r.opts.rate} batches/s × ${r.opts.batchPoints} points = ${num(r.opts.rate * r.opts.batchPoints)} points/s`,
    table(
      ['windows', 'ingest batches', 'commit latency p50', 'p99', 'max', 'prune batches', 'batch p50 / max', 'rows pruned', 'rows pruned/s'],
      r.phases.map((p) => [
        p.name,
        num(p.ingest.n),
        `${f(p.ingest.p50, 2)} ms`,
        `${f(p.ingest.p99, 2)} ms`,
        `${f(p.ingest.max, 1)} ms`,
        num(p.batches),
        p.batches === 0 ? '—' : `${f(p.batch.p50)} / ${f(p.batch.max)} ms`,
        num(p.rows),
        !p.on ? '—' : `${num(p.rowsPerSec)} (${f(p.seconds)} s)`,
      ]),
    ),
    `old points left (older than 15 days) at the end: ${num(r.oldPointsLeft)}; load average (1 min) at the end ${num(r.loadavg1, 2)}`,
    '',
  ];
  return out.join('\n');
}

main().catch((err) => {
  process.stderr.write(`[prune] failed: ${err.stack ?? err}\n`);
  process.exit(1);
});
