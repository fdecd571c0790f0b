'use strict';
/**
 * The collector's metric store alone, SQLite and PostgreSQL in the same run: metric points
 * stored per second of wall time and per CPU-second of this Node process (what a collector
 * spends), with PostgreSQL's own CPU (every server process, from the schedstat of each of its threads)
 * reported apart. Also traces per second, and ingest while pruning runs beside it.
 *
 *   node bench/store-pg.js [--quick] [--duration MS] [--agents N] [--only sqlite|postgres|pg-metrics] [--url URL] [--socket]
 *
 *   --duration  measured window per phase (default 4000 ms, after a warm-up)
 *   --agents    agents storing at once (default 8), each a stream of frames stored one after
 *               the other, as a session does; PostgreSQL phases use a pool of as many clients
 *   --only      measure one store only (e.g. under --cpu-prof); pg-metrics: PostgreSQL's first
 *               metric phase alone (no pruning, no traces), for a profile of that path only
 *   --url       an existing, empty PostgreSQL database (its server CPU is measured when the server
 *               runs on this machine; the password from PGPASSWORD); by default a throwaway server
 *               is made in a temporary directory by the tests' harness (test/dist/helpers/postgres.js),
 *               which runs with fsync off: the server's durability settings are printed with the figures
 *
 * Input: the frames of bench/upstream.js (lib/upstream-inputs.js): ≈64 KiB metric bodies of
 * packs of 100 points (60% histograms with real sketches, 20% counters, 20% gauges), frame n of
 * an agent for interval base + n × 10 s, so each frame makes new interval rows and six frames
 * merge into each minute rollup; nothing is a duplicate, nothing is late. Bodies are decoded
 * by the product's decoder before each store (as the collector does); decoding is also
 * measured alone, and "store only" leaves it out.
 *
 * Prints a Markdown table, then one JSON line with every number. Figures are reported, never asserted.
 */
const { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } = require('node:fs');
const { tmpdir } = require('node:os');
const { join, resolve } = require('node:path');
const { performance } = require('node:perf_hooks');
const { num, quantile, table } = require('./lib/stats');

const ROOT = resolve(__dirname, '..');
for (const f of ['proto/dist/upstream/index.js', 'collector/dist/store/index.js', 'collector/dist/store/pg/metrics.js']) {
  if (!existsSync(join(ROOT, f))) {
    process.stderr.write(`bench/store-pg: build the product first (npx tsc -b): missing ${f}\n`);
    process.exit(1);
  }
}
const up = require(join(ROOT, 'proto/dist/upstream/index.js'));
const { SqliteStore } = require(join(ROOT, 'collector/dist/store/index.js'));
const { PgMetricStore } = require(join(ROOT, 'collector/dist/store/pg/metrics.js'));
const { PgTextStore } = require(join(ROOT, 'collector/dist/store/pg/text-items.js'));
const { PgPruner } = require(join(ROOT, 'collector/dist/store/pg/prune.js'));
const { DATA_TABLES_SQL } = require(join(ROOT, 'collector/dist/store/pg/schema-data.js'));
const { Pool } = require(require.resolve('pg', { paths: [join(ROOT, 'collector')] }));
const { metricBody, traceBodies } = require('./lib/upstream-inputs');

function arg(name, def) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : def;
}
const quick = process.argv.includes('--quick');
const MEASURE_MS = Number(arg('--duration', quick ? 1500 : 4000));
const WARM_MS = quick ? 300 : 1000;
const AGENTS = Number(arg('--agents', 8));
const ONLY = arg('--only', undefined);
const URL = arg('--url', process.env.APM_BENCH_PG_URL);
const SOCKET = process.argv.includes('--socket');
const MAX_BODY = 64 * 1024 - 1;
const step = (s) => process.stderr.write(`[store-pg] ${s}\n`);

// ------------------------------------------------------------------ CPU

/** CPU seconds of one process, all threads, from the scheduler's ns counters (0 once it is gone). */
function pidCpu(pid) {
  let total = 0;
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) total += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]) / 1e9;
  } catch {
    // gone meanwhile
  }
  return total;
}

function parentOf(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
}

/** CPU seconds of the server so far: the postmaster and its children (backends, writers, autovacuum). */
function serverCpu(postmaster) {
  if (postmaster === null) return Number.NaN;
  let total = pidCpu(postmaster);
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (parentOf(Number(d)) === postmaster) total += pidCpu(Number(d));
    } catch {
      // gone meanwhile
    }
  }
  return total;
}

function selfCpu() {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

// ------------------------------------------------------------------ input

const base = Math.floor(Date.now() / 60_000) * 60_000;
const input = metricBody(MAX_BODY, base);
const seriesCache = new Map();

/** Frame n's packs, decoded by the product's decoder. */
function framePacks(n) {
  input.patch(n);
  return up.decodeMetricBatch(input.body, seriesCache);
}

/** CPU seconds per frame of decoding alone. */
function decodeCost() {
  const frames = quick ? 200 : 600;
  for (let i = 0; i < 50; i++) framePacks(i);
  const c0 = selfCpu();
  for (let i = 0; i < frames; i++) framePacks(i);
  return (selfCpu() - c0) / frames;
}

// ------------------------------------------------------------------ phases

/**
 * AGENTS streams, each storing frames one after the other through `storeFrame(agent, frameNo)`
 * (which may be synchronous; it returns how many units it stored), for WARM_MS then MEASURE_MS.
 * Returns units, frames, wall time, this process's CPU and the server's.
 */
async function run(storeFrame, postmaster, startFrame) {
  let measuring = false;
  let stop = false;
  let units = 0;
  let frames = 0;
  /** Each measured frame's store time (ms): what a session waits for its ack. */
  const latencies = [];
  const next = new Array(AGENTS).fill(startFrame);
  const stream = async (i) => {
    const agent = { projectId: 'bench', agentId: `agent-${i}` };
    while (!stop) {
      const t = performance.now();
      const n = await storeFrame(agent, next[i]++);
      if (measuring) {
        latencies.push(performance.now() - t);
        units += n;
        frames++;
      }
      // A synchronous store never yields: let timers and the other streams run.
      await new Promise(setImmediate);
    }
  };
  const all = Promise.all(Array.from({ length: AGENTS }, (_, i) => stream(i)));
  await new Promise((r) => setTimeout(r, WARM_MS));
  measuring = true;
  const t0 = performance.now();
  const c0 = selfCpu();
  const s0 = serverCpu(postmaster);
  await new Promise((r) => setTimeout(r, MEASURE_MS));
  measuring = false;
  const wall = (performance.now() - t0) / 1000;
  const cpu = selfCpu() - c0;
  const server = serverCpu(postmaster) - s0;
  stop = true;
  await all;
  return {
    units,
    frames,
    wall,
    cpu,
    server,
    nextFrame: Math.max(...next),
    p50: quantile(latencies, 0.5),
    p99: quantile(latencies, 0.99),
    max: Math.max(...latencies),
  };
}

/** A metric store as a frame storer: decode frame n, store it, check every point went in. */
function metricFrames(store) {
  return async (agent, n) => {
    // The store's clock follows the frames (received 15 s after the interval starts), so what
    // the first phase wrote is older than what later phases write, packs included.
    const r = await store.storeMetrics(agent, framePacks(n), base + n * 10_000 + 15_000);
    if (r.stored !== input.points) throw new Error(`stored ${r.stored} of ${input.points} points (duplicates ${r.duplicatePacks}, late ${r.late})`);
    return r.stored;
  };
}

function figures(name, r, decodePerFrame) {
  return {
    name,
    pointsPerSec: r.units / r.wall,
    pointsPerCpuSec: r.units / r.cpu,
    pointsPerStoreCpuSec: r.units / (r.cpu - decodePerFrame * r.frames),
    serverCores: r.server / r.wall,
    pointsPerServerCpuSec: r.units / r.server,
    nodeCores: r.cpu / r.wall,
    frameMs: { p50: r.p50, p99: r.p99, max: r.max },
    frames: r.frames,
    points: r.units,
  };
}

/** The PostgreSQL server's durability settings, reported with the figures. */
let durability = null;

function report(rows, traces, decodePerFrame) {
  const dash = (v, d = 0) => (Number.isFinite(v) ? num(v, d) : '—');
  process.stdout.write(
    `${table(
      [
        'store',
        'points/s',
        'points per Node CPU-s',
        'same, store only',
        'PostgreSQL cores',
        'points per PostgreSQL CPU-s',
        'Node cores',
        'frame ms p50 / p99 / max',
      ],
      rows.map((r) => [
        r.name +
          (r.pruned !== undefined
            ? ` (${num(r.pruned)} rows pruned, full batches of 5000 rows: ${num(r.pruneBatchMs.p50, 1)} ms median, ${num(r.pruneBatchMs.max, 1)} ms max)`
            : ''),
        num(r.pointsPerSec),
        num(r.pointsPerCpuSec),
        num(r.pointsPerStoreCpuSec),
        dash(r.serverCores, 2),
        dash(r.pointsPerServerCpuSec),
        num(r.nodeCores, 2),
        `${num(r.frameMs.p50, 1)} / ${num(r.frameMs.p99, 1)} / ${num(r.frameMs.max, 1)}`,
      ]),
    )}\n`,
  );
  if (traces !== null) {
    process.stdout.write(
      `\nTraces on PostgreSQL: ${num(traces.tracesPerSec)}/s, ${num(traces.tracesPerCpuSec)} per Node CPU-s, PostgreSQL ${dash(traces.serverCores, 2)} cores\n`,
    );
  }
  if (durability !== null) process.stdout.write(`\nPostgreSQL server: fsync ${durability.fsync}, synchronous_commit ${durability.synchronous_commit}\n`);
  process.stdout.write(
    `${JSON.stringify({ agents: AGENTS, durability, decodeUsPerFrame: decodePerFrame * 1e6, pointsPerFrame: input.points, metrics: rows, traces })}\n`,
  );
}

// ------------------------------------------------------------------ PostgreSQL

/** A local server's postmaster: the parent of a backend (null when the server is elsewhere). */
async function postmasterOf(pool) {
  try {
    const { rows } = await pool.query('SELECT pg_backend_pid() AS pid');
    return parentOf(rows[0].pid);
  } catch {
    return null;
  }
}

async function postgres() {
  if (URL !== undefined) return { url: URL, config: { connectionString: URL }, stop: async () => {} };
  const helper = join(ROOT, 'test/dist/helpers/postgres.js');
  if (!existsSync(helper)) throw new Error('no PostgreSQL: give --url, or build the tests (npx tsc -b) for test/dist/helpers/postgres.js');
  const { startPostgres } = require(helper);
  const pg = await startPostgres();
  // The harness gives the password apart, as a collector takes it (PGPASSWORD).
  process.env.PGPASSWORD = pg.password;
  // --socket: over the server's Unix socket instead of TCP on loopback (what a collector beside its database would use).
  const config = SOCKET ? { host: pg.socketDir, port: pg.port, user: pg.user, database: 'postgres' } : { connectionString: pg.url };
  return { url: pg.url, config, stop: () => pg.stop() };
}

// ------------------------------------------------------------------ main

async function main() {
  const tmp = mkdtempSync(join(tmpdir(), 'apm-store-pg-'));
  let server = null;
  try {
    step(`input: ${input.packs} packs, ${input.points} points (${input.histograms} histograms) per ${input.body.length}-byte frame; ${AGENTS} agents`);
    const decodePerFrame = decodeCost();
    step(`decode alone: ${num(decodePerFrame * 1e6)} µs per frame`);
    const rows = [];

    if (ONLY !== 'postgres' && ONLY !== 'pg-metrics') {
      const sqlite = SqliteStore.open(join(tmp, 'sqlite'), {});
      const r = await run(metricFrames(sqlite), null, 0);
      sqlite.close();
      rows.push(figures('SQLite (WAL, synchronous FULL)', r, decodePerFrame));
      step('SQLite done');
    }
    if (ONLY === 'sqlite') {
      report(rows, null, decodePerFrame);
      return;
    }

    server = await postgres();
    const pool = new Pool({ ...server.config, max: AGENTS });
    await pool.query(DATA_TABLES_SQL);
    const postmaster = await postmasterOf(pool);
    // Durability differs between a production server and the tests' throwaway one (fsync off): say which this is.
    const settings = {};
    for (const k of ['fsync', 'synchronous_commit', 'full_page_writes', 'server_version']) settings[k] = (await pool.query(`SHOW ${k}`)).rows[0][k];
    step(
      `PostgreSQL ${settings.server_version}: fsync ${settings.fsync}, synchronous_commit ${settings.synchronous_commit}, full_page_writes ${settings.full_page_writes}`,
    );
    durability = settings;
    const metrics = new PgMetricStore(pool, 120_000);
    const rp = await run(metricFrames(metrics), postmaster, 0);
    rows.push(figures('PostgreSQL, one pool', rp, decodePerFrame));
    step('PostgreSQL done');
    if (ONLY === 'pg-metrics') {
      await pool.end();
      report(rows, null, decodePerFrame);
      return;
    }

    // Ingest from the next minute on, while batches of 5000 rows of everything the first phase wrote are pruned.
    const secondFrame = (Math.ceil(rp.nextFrame / 6) + 1) * 6;
    const pruneBefore = base + secondFrame * 10_000;
    const pruner = new PgPruner(pool);
    let pruned = 0;
    let pruneStop = false;
    const pruneMs = [];
    const pruning = (async () => {
      while (!pruneStop) {
        const t = performance.now();
        const n = await pruner.prune(pruneBefore, 5000);
        if (n === 5000) pruneMs.push(performance.now() - t);
        pruned += n;
        if (n === 0) await new Promise((r) => setTimeout(r, 50));
      }
    })();
    const rq = await run(metricFrames(metrics), postmaster, secondFrame);
    pruneStop = true;
    await pruning;
    rows.push({
      ...figures('PostgreSQL, pruning meanwhile', rq, decodePerFrame),
      pruned,
      pruneBatchMs: { p50: quantile(pruneMs, 0.5), max: Math.max(...pruneMs) },
    });
    step('pruning done');

    // Traces: the text path, one transaction per ≈64 KiB frame of traces.
    const text = new PgTextStore(pool);
    const batches = traceBodies(MAX_BODY, 4).map((b) => up.decodeTextBatch(b.body));
    const rt = await run(async (agent, n) => (await text.storeText(agent, batches[n % batches.length])).traces, postmaster, 0);
    await pool.end();
    step('traces done');
    report(rows, { tracesPerSec: rt.units / rt.wall, tracesPerCpuSec: rt.units / rt.cpu, serverCores: rt.server / rt.wall }, decodePerFrame);
  } finally {
    if (server !== null) await server.stop();
    rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`bench/store-pg: ${err.stack ?? err}\n`);
  process.exit(1);
});
