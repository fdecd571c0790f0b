'use strict';
/**
 * The collector's metric store path, and how its cost grows with the agents: a real
 * `apm-collector run` (SQLite, WAL, synchronous=FULL) fed metric frames by 1, 10 and 100
 * agents at once, each agent a real UpstreamSession (sidecar/dist) with series of its own
 * (a `host` tag per agent), so the stored series grow with the agents: 393 per agent.
 *
 *   node bench/collector-store.js [--agents 1,10,100] [--seconds S] [--warmup S] [--window N]
 *                                 [--cpu-prof DIR] [--json FILE] [--quick] [--collector-cli FILE]
 *
 *   --agents    agent counts, one fresh collector (and data directory) each (default 1,10,100)
 *   --seconds   measured window per count (default 5; --quick 2), after --warmup (default 2; --quick 1)
 *   --window    unacked frames per agent (default 4)
 *   --cpu-prof  the collector's CPU profile of each count into DIR
 *               (summarize with `node bench/tools/profile-summary.js FILE`)
 *   --collector-cli FILE  another build's collector/dist/cli.js (an A/B against an older
 *               build; the in-process rows then use that build's store and decoder too)
 *
 * Every frame is a 64 KiB MetricBatch of 4 packs, 393 points (237 histograms with real
 * sketches), encoded by the proto encoders; frame n of an agent carries new pack ids for
 * the interval base + n × 10 s, so every frame is new data and six frames share a minute
 * rollup, as a live agent's 10 s intervals do. Agents are driven round-robin by acks: each
 * keeps `--window` frames unacked. Points are counted when their frame is acked (the
 * collector acks after its commit). The collector's CPU comes from /proc schedstat (all
 * its threads) over the measured window; points per collector CPU-second is the figure
 * (issue 13: ≥ 400,000 on SQLite). In the same run, in this process, with no socket and
 * no cipher: decodeMetricBatch of the same bodies alone (the decoder's floor), and the
 * collector's SqliteStore.storeMetrics on what it decoded, one agent, CPU µs per point each
 * (process.cpuUsage around each call). At the end /api/stats must count every point sent
 * as stored, else the row is marked.
 *
 * Prints a Markdown table, then one JSON line. Never asserts a target (exit 0 unless the
 * bench could not run).
 */
const { execFileSync, spawn } = require('node:child_process');
const { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } = require('node:fs');
const { cpus, loadavg, tmpdir } = require('node:os');
const { dirname, join, resolve } = require('node:path');
const { performance } = require('node:perf_hooks');
const { cpuSeconds } = require('./lib/proc');
const { num, table } = require('./lib/stats');

const ROOT = resolve(__dirname, '..');
for (const f of ['proto/dist/upstream/index.js', 'sidecar/dist/upstream/session.js', 'collector/dist/cli.js']) {
  if (!existsSync(join(ROOT, f))) {
    process.stderr.write(`bench/collector-store: build the product first (npx tsc -b): missing ${f}\n`);
    process.exit(1);
  }
}
const up = require(join(ROOT, 'proto/dist/upstream/index.js'));
const { UpstreamSession } = require(join(ROOT, 'sidecar/dist/upstream/session.js'));
const { metricBody } = require('./lib/upstream-inputs');
const { sqlFloors } = require('./lib/sql-floor');

function arg(name, def) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : def;
}
const quick = process.argv.includes('--quick');
const AGENTS = String(arg('--agents', '1,10,100')).split(',').map(Number);
const MEASURE_MS = 1000 * Number(arg('--seconds', quick ? 2 : 5));
const WARM_MS = 1000 * Number(arg('--warmup', quick ? 1 : 2));
const WINDOW = Number(arg('--window', 4));
const CPU_PROF = arg('--cpu-prof', undefined);
const JSON_FILE = arg('--json', undefined);
const CLI = resolve(arg('--collector-cli', join(ROOT, 'collector/dist/cli.js')));
/** The build under test's store and upstream decoder, for the in-process rows. */
const { SqliteStore } = require(join(dirname(CLI), 'index.js'));
const upUnderTest = require(require.resolve('@apm-sidecar/proto/upstream', { paths: [dirname(CLI)] }));
const { migrate } = require(join(dirname(CLI), 'store/schema.js'));
const MAX_BODY = 64 * 1024 - 1;
const GOAL = 400_000;

const step = (s) => process.stderr.write(`[collector-store] ${s}\n`);

const children = new Set();
let tmp = null;
function cleanup() {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  if (tmp !== null) rmSync(tmp, { recursive: true, force: true });
  tmp = null;
}
process.on('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    cleanup();
    process.exit(130);
  });
}

/** CPU seconds of `pid`, all threads, from the scheduler's ns counters (utime/stime are tick-sampled). */
function taskCpuSeconds(pid) {
  let ns = 0;
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
      } catch {
        // the thread ended meanwhile
      }
    }
  } catch {
    // no /proc/PID/task
  }
  return ns > 0 ? ns / 1e9 : cpuSeconds(pid);
}

function machineCpu() {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  return { total: f.reduce((a, b) => a + b, 0), idle: f[3] + f[4] };
}

/** A collector in its own data directory; resolves with its pid and ports once it listens. */
async function startCollector(dir) {
  const env = { ...process.env, NODE_PATH: join(ROOT, 'node_modules') };
  const keyText = execFileSync(process.execPath, [CLI, 'keys', 'create', '--project', 'bench', '--data-dir', dir], { encoding: 'utf8', env })
    .trim()
    .split('\n')
    .pop();
  const prof = CPU_PROF !== undefined ? ['--cpu-prof', '--cpu-prof-dir', CPU_PROF] : [];
  const args = [...prof, CLI, 'run', '--host', '127.0.0.1', '--port', '0', '--http', '127.0.0.1:0', '--data-dir', dir, '--log-level', 'info'];
  const c = spawn(process.execPath, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(c);
  let err = '';
  c.stderr.on('data', (d) => {
    err = (err + d).slice(-4000);
  });
  const ports = await new Promise((res, rej) => {
    let buf = '';
    const t = setTimeout(() => rej(new Error(`the collector did not listen within 15 s: ${err}`)), 15_000);
    c.on('exit', (code) => rej(new Error(`the collector exited with ${code}: ${err}`)));
    c.stdout.on('data', (d) => {
      buf += d;
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        try {
          const o = JSON.parse(line);
          if (o.msg === 'listening') {
            clearTimeout(t);
            res({ agents: o.agents.port, http: o.http.port });
          }
        } catch {
          // not a JSON line
        }
      }
    });
  });
  return { child: c, key: up.parseAccessKey(keyText), ...ports };
}

async function stopCollector(c) {
  if (c.exitCode !== null || c.signalCode !== null) return;
  const done = new Promise((res) => c.once('exit', res));
  c.kill('SIGTERM');
  const t = setTimeout(() => c.kill('SIGKILL'), 10_000);
  await done;
  clearTimeout(t);
  children.delete(c);
}

/** The sidecar's UpstreamSession to the collector; resolves when active. */
function openSession(port, key, agentId) {
  const h = { ack: () => {}, closed: (cause) => process.stderr.write(`session ${agentId} closed: ${cause}\n`) };
  return new Promise((res, rej) => {
    let active = false;
    const s = new UpstreamSession(
      {
        host: '127.0.0.1',
        port,
        key,
        agentInfo: { agentId, host: 'bench', version: '0.1.0', apps: ['bench'] },
        connectTimeoutMs: 10_000,
        soTimeoutMs: 120_000,
        maxFrameBytes: 1 << 20,
      },
      {
        active: () => {
          active = true;
          res({ s, h });
        },
        ack: (counter) => h.ack(counter),
        drain: () => {},
        closed: (cause) => (active ? h.closed(cause) : rej(new Error(`session ${agentId} closed before active: ${cause}`))),
      },
    );
  });
}

/**
 * In this process, no socket and no cipher: CPU µs per point of the build under test's
 * decodeMetricBatch alone, and of its SqliteStore.storeMetrics (one agent, `frames` new
 * frames of `input`, each a transaction of its own as the collector commits them).
 */
function inProcess(input, frames) {
  const dir = mkdtempSync(join(tmp, 'in-process-'));
  const store = SqliteStore.open(dir, { rollupGraceMs: 120_000 });
  const cache = new Map();
  const cpu = () => {
    const c = process.cpuUsage();
    return (c.user + c.system) / 1e6;
  };
  let decode = 0;
  let storing = 0;
  let points = 0;
  const base = Math.floor(Date.now() / 60_000) * 60_000;
  try {
    for (let f = 1; f <= frames; f++) {
      input.patch(f);
      const t0 = cpu();
      const packs = upUnderTest.decodeMetricBatch(input.body, cache);
      const t1 = cpu();
      points += store.storeMetrics({ projectId: 'bench', agentId: 'in-process' }, packs, base).stored;
      const t2 = cpu();
      decode += t1 - t0;
      storing += t2 - t1;
    }
  } finally {
    store.close();
  }
  return { frames, points, decodeUsPerPoint: (decode * 1e6) / points, storeUsPerPoint: (storing * 1e6) / points };
}

/** One agent count: fresh collector, N sessions, WINDOW frames in flight per session. */
async function runCase(n) {
  const dir = join(tmp, `agents-${n}`);
  mkdirSync(dir);
  const col = await startCollector(dir);
  const base = Math.floor(Date.now() / 60_000) * 60_000;
  step(`${n} agent(s): building ${n} bodies, opening ${n} sessions (collector pid ${col.child.pid})`);
  const agents = [];
  for (let k = 0; k < n; k++) {
    const input = metricBody(MAX_BODY, base, `host-${String(k).padStart(3, '0')}`);
    const sess = await openSession(col.agents, col.key, `agent-${k}`);
    agents.push({ input, sess, frameNo: 0, inflight: [], sentPoints: 0 });
  }
  const m = { frames: 0, points: 0 };
  let measuring = false;
  let stopping = false;
  let pending = 0;
  let onDrained = null;
  const send = (a) => {
    a.frameNo++;
    a.input.patch(a.frameNo);
    const c = a.sess.s.sendNumeric(up.Inner.MetricBatch, a.input.body);
    a.inflight.push(c);
    a.sentPoints += a.input.points;
    pending++;
  };
  for (const a of agents) {
    a.sess.h.ack = (counter) => {
      while (a.inflight.length > 0 && a.inflight[0] <= counter) {
        a.inflight.shift();
        pending--;
        if (measuring) {
          m.frames++;
          m.points += a.input.points;
        }
      }
      if (!stopping) while (a.inflight.length < WINDOW) send(a);
      else if (pending === 0 && onDrained !== null) onDrained();
    };
    a.sess.h.closed = (cause) => {
      throw new Error(`session closed during the run: ${cause}`);
    };
  }
  for (const a of agents) while (a.inflight.length < WINDOW) send(a);
  await new Promise((r) => setTimeout(r, WARM_MS));
  const pid = col.child.pid;
  const cpu0 = taskCpuSeconds(pid);
  const mach0 = machineCpu();
  const own0 = process.cpuUsage();
  const t0 = performance.now();
  measuring = true;
  await new Promise((r) => setTimeout(r, MEASURE_MS));
  measuring = false;
  const sec = (performance.now() - t0) / 1000;
  const cpu = taskCpuSeconds(pid) - cpu0;
  const own = process.cpuUsage(own0);
  const mach1 = machineCpu();
  stopping = true;
  if (pending > 0) await new Promise((r) => (onDrained = r));
  for (const a of agents) {
    a.sess.h.closed = () => {};
    a.sess.s.close('bench done', null);
  }
  const stats = await (await fetch(`http://127.0.0.1:${col.http}/api/stats`)).json();
  await stopCollector(col.child);
  const sent = agents.reduce((s, a) => s + a.sentPoints, 0);
  const busy = 1 - (mach1.idle - mach0.idle) / (mach1.total - mach0.total);
  const ownCores = (own.user + own.system) / 1e6 / sec;
  return {
    agents: n,
    series: agents.reduce((s, a) => s + a.input.points, 0),
    seconds: sec,
    frames: m.frames,
    points: m.points,
    pointsPerSec: m.points / sec,
    collectorCores: cpu / sec,
    pointsPerCpuSec: m.points / cpu,
    cpuUsPerPoint: (cpu * 1e6) / m.points,
    senderCores: ownCores,
    otherLoadCores: Math.max(0, busy * cpus().length - ownCores - cpu / sec),
    sent,
    stored: stats.received?.metricPoints,
    late: stats.droppedLate,
    duplicatePacks: stats.duplicatePacks,
  };
}

async function main() {
  const env = {
    date: new Date().toISOString(),
    node: process.version,
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    loadavgAtStart: loadavg().map((x) => Number(x.toFixed(2))),
  };
  step(`${env.date}  node ${env.node}  ${env.cores} × ${env.cpu}  load ${env.loadavgAtStart.join(' ')}`);
  if (CPU_PROF !== undefined) mkdirSync(CPU_PROF, { recursive: true });
  tmp = mkdtempSync(join(tmpdir(), 'apm-bench-collector-store-'));
  const probe = metricBody(MAX_BODY);
  step('in process: decodeMetricBatch alone, then SqliteStore.storeMetrics (no socket, no cipher)');
  inProcess(metricBody(MAX_BODY), quick ? 20 : 50); // warm-up: JIT, the first pages
  const local = inProcess(probe, quick ? 100 : 300);
  step('in process: plain better-sqlite3 floors (the schema, a slim row per point, a row per pack)');
  const packs = up.decodeMetricBatch(probe.body);
  const floorRows = packs.flatMap((p) =>
    p.points.map((pt) => ({
      key: Buffer.from(pt.series.key, 'latin1'),
      name: pt.series.name,
      tagsJson: JSON.stringify(pt.series.tags),
      kind: pt.series.kind,
      sketch: pt.sketchBytes ?? null,
    })),
  );
  const floors = sqlFloors({ tmp, migrate, rows: floorRows, packBytes: packs.map((p) => up.encodeMetricPack(p)), frames: quick ? 100 : 300 });
  const cases = [];
  for (const n of AGENTS) cases.push(await runCase(n));
  env.loadavgAtEnd = loadavg().map((x) => Number(x.toFixed(2)));
  const first = cases[0];
  const rows = cases.map((c) => [
    String(c.agents),
    num(c.series),
    num(c.pointsPerSec),
    num(c.collectorCores, 2),
    num(c.pointsPerCpuSec),
    num(c.cpuUsPerPoint, 2),
    `${num(c.cpuUsPerPoint / first.cpuUsPerPoint, 2)}×`,
    `${c.pointsPerCpuSec >= GOAL ? 'meets' : 'misses'}`,
    `${num(c.stored)} of ${num(c.sent)}${c.stored === c.sent ? '' : ' ✗'}`,
    num(c.otherLoadCores, 2),
  ]);
  process.stdout.write(
    `\ncollector metric store, ${env.date.slice(0, 10)}, node ${env.node}, ${env.cores} × ${env.cpu}; ` +
      `64 KiB frames of ${probe.points} points (${probe.histograms} histograms); window ${WINDOW} per agent; ${MEASURE_MS / 1000} s after ${WARM_MS / 1000} s warm-up\n` +
      `in this process, no socket, no cipher (${num(local.points)} points): decodeMetricBatch ${num(local.decodeUsPerPoint, 2)} µs per point, ` +
      `SqliteStore.storeMetrics ${num(local.storeUsPerPoint, 2)} µs per point → ${num(1e6 / (local.decodeUsPerPoint + local.storeUsPerPoint))} points per CPU-second for the two\n` +
      `plain better-sqlite3 floors, CPU µs per point: this schema (INSERT into metric_points + upsert into metric_rollups) ${num(floors.schema, 2)}; ` +
      `a slim row per point ${num(floors.slimRow, 2)}; a row per pack (points as one blob) ${num(floors.packRow, 2)}\n\n` +
      `${table(
        [
          'agents',
          'series',
          'points/s',
          'collector cores',
          'points per collector CPU-s',
          'CPU µs per point',
          'vs 1st row',
          `goal ≥ ${num(GOAL)}`,
          'stored of sent',
          'other load (cores)',
        ],
        rows,
      )}\n\n`,
  );
  const out = { bench: 'collector-store', env, collectorCli: CLI, window: WINDOW, inProcess: local, floors, goal: GOAL, cases };
  if (JSON_FILE !== undefined) writeFileSync(JSON_FILE, `${JSON.stringify(out, null, 2)}\n`);
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

main().then(
  () => {
    cleanup();
    process.exit(0);
  },
  (err) => {
    process.stderr.write(`bench/collector-store: ${err.stack ?? err}\n`);
    cleanup();
    process.exit(1);
  },
);
