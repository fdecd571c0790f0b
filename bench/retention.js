'use strict';
/**
 * (d) Retention write rate: the sidecar's RetentionStore (sidecar/dist/retention/store.js)
 * committing shim metric frames, next to a plain better-sqlite3 prepared INSERT of the
 * same rows measured in the same run. Target (issue): store ≥ 50% of raw.
 *
 *   node bench/retention.js [--quick] [--seconds S] [--batch N[,N…]] [--sync NORMAL,FULL] [--rounds R]
 *                           [--tmp DIR] [--json] [--cpu-prof DIR]
 *
 *   --seconds  measured time per case (default 10; --quick 3). A case is one of
 *              {store, raw} × {NORMAL, FULL}; its time is split into R rounds and
 *              the store and raw rounds alternate (rotating order), so a change of
 *              machine load hits both alike
 *   --batch    frames per turn of the event loop = per transaction (default 32; a
 *              comma list runs each: e.g. 1,4,32 — 1 is what the real data rate gives,
 *              4 shims flushing at once 4, a backlog or a flood of shims many)
 *   --sync     synchronous modes to run (default NORMAL,FULL)
 *   --tmp      where the databases go (default os.tmpdir(); ext4 here). Removed at the end
 *   --cpu-prof write a .cpuprofile of this process (the store and raw loops both run
 *              here) into DIR; summarize with bench/tools/profile-summary.js
 *
 * Input: 4 shims × 100 series each (60 histograms with real DDSketches of 100
 * log-normal values, 40 counters), one frame per shim flush, encoded with the
 * product's proto `encodeMetrics` (the payload the sidecar hands to addFrame: the
 * frame after its 5-byte header). 16 flushes are pre-encoded per shim and reused in a
 * ring; each row gets a new (instance_id, seq). A synthetic clock puts 10 flushes of
 * the 4 shims (40 frames) into one 10 s interval, as flush_ms=1000 and
 * metric_interval_ms=10000 do.
 *
 *   store  RetentionStore.open(dir, sync): addFrame(frame, done) for BATCH frames, then
 *          yield one setImmediate; the store's group commit (one transaction for the
 *          turn, INSERT OR IGNORE into frames + upsert of the shim's seq) runs, then the
 *          callbacks, which count. This is the sidecar's path: it acks a shim in that
 *          callback.
 *   raw    a database with the same pragmas (journal_mode=WAL, the same synchronous,
 *          busy_timeout) and a `frames` table of the same shape (same columns, primary
 *          key and interval index); one prepared INSERT per row, BATCH rows per
 *          db.transaction(), in a tight loop. No seq table, no callbacks: the floor.
 *
 * Both keep the table bounded the same way: when the synthetic interval advances,
 * frames older than 3 intervals are deleted (store.purge(), raw: one DELETE), as the
 * sidecar replaces an interval's frames by its pack when it closes. That time counts.
 *
 * Reported: frames/s and metric points/s committed (callbacks fired; 100 points per
 * frame), MB/s of payload, this process's CPU-seconds per case, and store ÷ raw.
 */
const { mkdirSync, mkdtempSync, rmSync, writeFileSync } = require('node:fs');
const { tmpdir } = require('node:os');
const { join, resolve } = require('node:path');
const { performance } = require('node:perf_hooks');
const { latencies, num, table } = require('./lib/stats');

const ROOT = resolve(__dirname, '..');
const proto = require(join(ROOT, 'proto/dist/index.js'));
const { RetentionStore } = require(join(ROOT, 'sidecar/dist/retention/store.js'));
// The product's own better-sqlite3 (repository root node_modules), the same build the store uses.
const Database = require(require.resolve('better-sqlite3', { paths: [join(ROOT, 'sidecar')] }));

const SHIMS = 4;
const SERIES = 100;
const SAMPLES_PER_POINT = 100;
const FLUSHES_PRE_ENCODED = 16;
const FLUSHES_PER_INTERVAL = 10; // flush_ms 1000, metric_interval_ms 10000
const INTERVAL_MS = 10_000;
const KEEP_INTERVALS = 3;
const ROUTES = ['/pay', '/cart', '/login', '/search', '/orders', '/items', '/profile', '/health', '/checkout', '/refund'];

function argv(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

const quiet = { trace() {}, debug() {}, info() {}, warn() {}, error() {}, fatal() {}, child: () => quiet };

/** One shim flush: 100 series, 60 histograms (sketch of 100 values) and 40 counters. */
function shimFrame(shim, flush) {
  const points = [];
  for (let s = 0; s < SERIES; s++) {
    const hist = s % 10 < 6;
    const kind = hist ? proto.MetricKind.Histogram : proto.MetricKind.Counter;
    const name = hist ? 'http.server.duration' : 'http.server.requests';
    const tags = { app: `shim-${shim}`, route: `${ROUTES[s % ROUTES.length]}/${Math.floor(s / 10)}`, status: '200' };
    const values = latencies(SAMPLES_PER_POINT, 1 + shim * 1_000_003 + flush * 1009 + s);
    let sum = 0;
    let min = Number.POSITIVE_INFINITY;
    let max = Number.NEGATIVE_INFINITY;
    const sketch = hist ? new proto.Sketch() : null;
    for (const v0 of values) {
      const v = hist ? v0 : 1;
      sum += v;
      if (v < min) min = v;
      if (v > max) max = v;
      if (sketch !== null) sketch.add(v);
    }
    points.push({ series: { key: '', kind, name, tags }, count: values.length, sum, min, max, last: Number.NaN, sketch });
  }
  // The sidecar stores the frame's payload: everything after the 5-byte frame header.
  return proto.encodeMetrics({ seq: flush + 1, ts: 1_700_000_000_000 + flush * 1000, windowMs: 1000, points }).subarray(5);
}

function buildInputs() {
  const payloads = [];
  for (let s = 0; s < SHIMS; s++) {
    const ring = [];
    for (let f = 0; f < FLUSHES_PRE_ENCODED; f++) ring.push(shimFrame(s, f));
    payloads.push(ring);
  }
  const instanceIds = Array.from({ length: SHIMS }, (_, s) => `bench-instance-${s}-${'0'.repeat(16)}`.slice(0, 32));
  let bytes = 0;
  for (const ring of payloads) for (const p of ring) bytes += p.length;
  return { payloads, instanceIds, meanFrameBytes: bytes / (SHIMS * FLUSHES_PRE_ENCODED) };
}

/** Row source shared by both sides: frame k = flush ⌊k / 4⌋ of shim k mod 4. */
class Rows {
  constructor(inputs) {
    this.inputs = inputs;
    this.k = 0;
  }
  next(out) {
    const k = this.k++;
    const shim = k % SHIMS;
    const flush = Math.floor(k / SHIMS);
    out.instanceId = this.inputs.instanceIds[shim];
    out.seq = flush + 1;
    out.intervalStart = Math.floor(flush / FLUSHES_PER_INTERVAL) * INTERVAL_MS;
    out.payload = this.inputs.payloads[shim][flush % FLUSHES_PRE_ENCODED];
    return out;
  }
  /** Interval of the last row handed out. */
  get interval() {
    return Math.floor(Math.floor((this.k - 1) / SHIMS) / FLUSHES_PER_INTERVAL) * INTERVAL_MS;
  }
}

const nextTurn = () => new Promise((r) => setImmediate(r));

function cpuNow() {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

class StoreCase {
  constructor(dir, sync, inputs, batch) {
    this.store = RetentionStore.open(dir, sync, quiet);
    const got = this.store.synchronous();
    if (got !== (sync === 'FULL' ? 2 : 1)) throw new Error(`store synchronous is ${got}, expected ${sync}`);
    this.rows = new Rows(inputs);
    this.batch = batch;
    this.trimmedTo = 0;
    this.committed = 0;
    this.errors = 0;
    this.done = (err) => {
      if (err === null) this.committed++;
      else this.errors++;
    };
  }
  async round(ms) {
    const before = this.committed;
    const commitsBefore = this.store.commits;
    const c0 = cpuNow();
    const t0 = performance.now();
    let t = t0;
    while (t - t0 < ms) {
      for (let i = 0; i < this.batch; i++) this.store.addFrame(this.rows.next({}), this.done);
      // The store's commit was scheduled with setImmediate by the first addFrame: it runs before this.
      await nextTurn();
      const iv = this.rows.interval;
      if (iv - KEEP_INTERVALS * INTERVAL_MS > this.trimmedTo) {
        this.trimmedTo = iv - KEEP_INTERVALS * INTERVAL_MS;
        this.store.purge(this.trimmedTo, 0);
      }
      t = performance.now();
    }
    return { frames: this.committed - before, seconds: (t - t0) / 1000, cpu: cpuNow() - c0, commits: this.store.commits - commitsBefore };
  }
  close() {
    this.store.close();
  }
}

class RawCase {
  constructor(dir, sync, inputs, batch) {
    const db = new Database(join(dir, 'raw.db'));
    db.pragma('journal_mode = WAL');
    db.pragma(`synchronous = ${sync}`);
    db.pragma('busy_timeout = 2000');
    db.exec(`
      CREATE TABLE frames (instance_id TEXT NOT NULL, seq INTEGER NOT NULL, interval_start INTEGER NOT NULL, payload BLOB NOT NULL, PRIMARY KEY (instance_id, seq));
      CREATE INDEX frames_interval ON frames (interval_start);
    `);
    this.db = db;
    const insert = db.prepare('INSERT INTO frames (instance_id, seq, interval_start, payload) VALUES (?, ?, ?, ?)');
    this.tx = db.transaction((rows) => {
      for (const r of rows) insert.run(r.instanceId, r.seq, r.intervalStart, r.payload);
    });
    const del = db.prepare('DELETE FROM frames WHERE interval_start < ?');
    this.trim = db.transaction((cutoff) => del.run(cutoff));
    this.rows = new Rows(inputs);
    this.buf = Array.from({ length: batch }, () => ({}));
    this.trimmedTo = 0;
  }
  async round(ms) {
    let frames = 0;
    let commits = 0;
    const c0 = cpuNow();
    const t0 = performance.now();
    let t = t0;
    while (t - t0 < ms) {
      for (const r of this.buf) this.rows.next(r);
      this.tx(this.buf);
      frames += this.buf.length;
      commits++;
      const iv = this.rows.interval;
      if (iv - KEEP_INTERVALS * INTERVAL_MS > this.trimmedTo) {
        this.trimmedTo = iv - KEEP_INTERVALS * INTERVAL_MS;
        this.trim(this.trimmedTo);
      }
      t = performance.now();
    }
    await nextTurn();
    return { frames, seconds: (t - t0) / 1000, cpu: cpuNow() - c0, commits };
  }
  close() {
    this.db.close();
  }
}

async function run({
  seconds = Number(argv('--seconds', process.argv.includes('--quick') ? 3 : 10)),
  batches = argv('--batch', '32').split(',').map(Number),
  syncs = argv('--sync', 'NORMAL,FULL').split(','),
  rounds = Number(argv('--rounds', 5)),
  tmp = argv('--tmp', tmpdir()),
  log = (s) => process.stderr.write(`[retention] ${s}\n`),
} = {}) {
  if (!(seconds > 0 && seconds <= 120)) throw new Error('--seconds must be in (0, 120]');
  for (const b of batches) if (!(Number.isInteger(b) && b >= 1 && b <= 10_000)) throw new Error('--batch: integers 1..10000, comma-separated');
  const inputs = buildInputs();
  const base = mkdtempSync(join(tmp, 'apm-bench-retention-'));
  // Ctrl-C or SIGTERM mid-run: remove the databases too (the finally below does not run on process.exit).
  const onSignal = () => {
    rmSync(base, { recursive: true, force: true });
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const cases = [];
  try {
    for (const [batch, sync] of batches.flatMap((b) => syncs.map((y) => [b, y]))) {
      if (sync !== 'NORMAL' && sync !== 'FULL') throw new Error(`--sync: NORMAL or FULL, not ${sync}`);
      const dirS = join(base, `store-${sync}-${batch}`);
      const dirR = join(base, `raw-${sync}-${batch}`);
      mkdirSync(dirR);
      const sides = { store: new StoreCase(dirS, sync, inputs, batch), raw: new RawCase(dirR, sync, inputs, batch) };
      const acc = { store: [], raw: [] };
      try {
        // Warm-up: JIT, page cache, WAL file growth. Not counted.
        for (const k of ['store', 'raw']) await sides[k].round(Math.min(500, seconds * 100));
        const order = ['store', 'raw'];
        for (let r = 0; r < rounds; r++) {
          for (const k of r % 2 === 0 ? order : [...order].reverse()) acc[k].push(await sides[k].round((seconds * 1000) / rounds));
        }
        if (sides.store.errors > 0) throw new Error(`the store reported ${sides.store.errors} failed commits`);
      } finally {
        sides.store.close();
        sides.raw.close();
      }
      const sum = (xs, f) => xs.reduce((a, x) => a + x[f], 0);
      const side = (xs) => {
        const frames = sum(xs, 'frames');
        const secs = sum(xs, 'seconds');
        const cpu = sum(xs, 'cpu');
        const perRound = xs.map((x) => x.frames / x.seconds).sort((a, b) => a - b);
        return {
          frames,
          seconds: secs,
          framesPerSec: frames / secs,
          pointsPerSec: (frames * SERIES) / secs,
          mbPerSec: (frames * inputs.meanFrameBytes) / secs / 1e6,
          cpuSeconds: cpu,
          framesPerCpuSec: frames / cpu,
          commits: sum(xs, 'commits'),
          roundMin: perRound[0],
          roundMax: perRound[perRound.length - 1],
        };
      };
      const c = { sync, batch, store: side(acc.store), raw: side(acc.raw) };
      c.ratio = c.store.framesPerSec / c.raw.framesPerSec;
      c.cpuRatio = c.store.framesPerCpuSec / c.raw.framesPerCpuSec;
      cases.push(c);
      log(
        `${sync}, ${batch} frames per transaction: store ${num(c.store.framesPerSec)} frames/s, raw ${num(c.raw.framesPerSec)} frames/s → ${num(c.ratio * 100, 1)}%`,
      );
    }
  } finally {
    rmSync(base, { recursive: true, force: true });
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  return {
    seconds,
    batch: batches[0],
    batches,
    rounds,
    tmp,
    shims: SHIMS,
    seriesPerFrame: SERIES,
    samplesPerPoint: SAMPLES_PER_POINT,
    frameBytes: inputs.meanFrameBytes,
    cases,
  };
}

function report(res) {
  const rows = [];
  for (const c of res.cases) {
    for (const k of ['store', 'raw']) {
      const x = c[k];
      rows.push([
        `${k === 'store' ? 'RetentionStore.addFrame, group commit' : 'raw better-sqlite3 INSERT'} (${c.sync}, ${c.batch}/tx)`,
        num(x.framesPerSec),
        `${num(x.roundMin)}–${num(x.roundMax)}`,
        num(x.pointsPerSec),
        num(x.mbPerSec, 1),
        num(x.framesPerCpuSec),
        k === 'store' ? `${num(c.ratio * 100, 1)}%` : '100%',
        k === 'store' ? `${num(c.cpuRatio * 100, 1)}%` : '100%',
      ]);
    }
  }
  return [
    `retention write rate: ${res.shims} shims × ${res.seriesPerFrame} series per frame (${num(res.frameBytes)} B payload), ${res.batches.join(' or ')} frames per transaction, ${num(res.seconds)} s per case in ${res.rounds} alternating rounds`,
    table(['case', 'frames/s', 'per round', 'points/s', 'MB/s', 'frames/CPU-s', '÷ raw (wall)', '÷ raw (CPU)'], rows),
  ].join('\n');
}

module.exports = { run, report };

if (require.main === module) {
  const profDir = argv('--cpu-prof', undefined);
  let session = null;
  const start = async () => {
    if (profDir === undefined) return;
    const { Session } = require('node:inspector');
    session = new Session();
    session.connect();
    const post = (m, p) => new Promise((res, rej) => session.post(m, p, (e, r) => (e ? rej(e) : res(r))));
    await post('Profiler.enable');
    await post('Profiler.start');
    session.stop = async () => {
      const { profile } = await post('Profiler.stop');
      mkdirSync(profDir, { recursive: true });
      const f = join(profDir, `retention-${Date.now()}.cpuprofile`);
      writeFileSync(f, JSON.stringify(profile));
      process.stderr.write(`[retention] CPU profile: ${f}\n`);
    };
  };
  start()
    .then(() => run())
    .then(
      async (res) => {
        if (session !== null) await session.stop();
        process.stdout.write(process.argv.includes('--json') ? `${JSON.stringify(res)}\n` : `${report(res)}\n`);
      },
      (err) => {
        process.stderr.write(`${err.stack}\n`);
        process.exit(1);
      },
    );
}
