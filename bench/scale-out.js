'use strict';
/**
 * Scale-out (issue 12): real `apm-collector run` processes fed by real UpstreamSessions, in
 * one run, on the same input:
 *
 *   sqlite          one collector, its SQLite file (WAL, synchronous FULL)
 *   postgres ×1     one collector on PostgreSQL
 *   postgres ×2     two collectors on one PostgreSQL, the agents split between them
 *
 *   node bench/scale-out.js [--agents N] [--seconds S] [--warmup S] [--url postgres://…] [--quick]
 *
 * Each agent keeps 4 frames unacked: 64 KiB MetricBatch frames of 393 points (bench/lib/
 * upstream-inputs.js, a `host` tag per agent), then, in a second window, 64 KiB TextBatch
 * frames of traces. A point or trace counts when its frame is acked (after the commit).
 * CPU from /proc schedstat: the collectors' (summed) and, apart, PostgreSQL's own (the
 * postmaster and its children). Without --url the server is the tests' throwaway one
 * (test/dist/helpers/postgres.js: fsync off, so PostgreSQL's figures are its CPU, not a disk).
 * Prints a Markdown table and one JSON line; asserts nothing.
 */
const { execFileSync, spawn } = require('node:child_process');
const { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } = require('node:fs');
const { cpus, loadavg, tmpdir } = require('node:os');
const { join, resolve } = require('node:path');
const { performance } = require('node:perf_hooks');
const { num, table } = require('./lib/stats');
const { metricBody, traceBodies } = require('./lib/upstream-inputs');

const ROOT = resolve(__dirname, '..');
const CLI = join(ROOT, 'collector/dist/cli.js');
for (const f of ['proto/dist/upstream/index.js', 'sidecar/dist/upstream/session.js', CLI]) {
  if (!existsSync(resolve(ROOT, f))) {
    process.stderr.write(`bench/scale-out: build the product first (npx tsc -b): missing ${f}\n`);
    process.exit(1);
  }
}
const up = require(join(ROOT, 'proto/dist/upstream/index.js'));
const { UpstreamSession } = require(join(ROOT, 'sidecar/dist/upstream/session.js'));

function arg(name, def) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : def;
}
const quick = process.argv.includes('--quick');
const AGENTS = Number(arg('--agents', 8));
const MEASURE_MS = 1000 * Number(arg('--seconds', quick ? 2 : 5));
const WARM_MS = 1000 * Number(arg('--warmup', quick ? 1 : 2));
const URL = arg('--url', undefined);
const WINDOW = 4;
const MAX_BODY = 64 * 1024 - 1;
const step = (s) => process.stderr.write(`[scale-out] ${s}\n`);

const children = new Set();
const tmp = mkdtempSync(join(tmpdir(), 'apm-bench-scale-'));
function cleanup() {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  rmSync(tmp, { recursive: true, force: true });
}
process.on('exit', cleanup);

/** CPU seconds of a process, all threads, from the scheduler's ns counters (0 once gone). */
function pidCpu(pid) {
  let ns = 0;
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
  } catch {
    // gone meanwhile
  }
  return ns / 1e9;
}

/** PostgreSQL's CPU so far: its postmaster and every child (backends, writers, autovacuum). */
function serverCpu(postmaster) {
  if (postmaster === null) return Number.NaN;
  let total = pidCpu(postmaster);
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === postmaster) total += pidCpu(Number(d));
    } catch {
      // gone meanwhile
    }
  }
  return total;
}

function cli(args, env) {
  return execFileSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, ...env } });
}

async function startCollector(storeArgs, host) {
  const args = [CLI, 'run', ...storeArgs, '--host', host, '--port', '0', '--http', `${host}:0`, '--log-level', 'info'];
  const c = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(c);
  let err = '';
  c.stderr.on('data', (d) => {
    err = (err + d).slice(-4000);
  });
  const port = await new Promise((res, rej) => {
    let buf = '';
    const t = setTimeout(() => rej(new Error(`the collector did not listen within 15 s: ${err}`)), 15_000);
    c.on('exit', (code) => rej(new Error(`the collector exited with ${code}: ${err}`)));
    c.stdout.on('data', (d) => {
      if (process.env.SCALE_OUT_LOG) require('node:fs').appendFileSync(process.env.SCALE_OUT_LOG, d);
      buf += d;
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (!line.includes('"listening"')) continue;
        clearTimeout(t);
        res(JSON.parse(line).agents.port);
      }
    });
  });
  return { child: c, host, port };
}

function openSession(host, port, key, agentId) {
  const h = { ack: () => {} };
  return new Promise((res, rej) => {
    let active = false;
    const s = new UpstreamSession(
      {
        host,
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
        closed: (cause) => {
          if (!active) rej(new Error(`session ${agentId} closed before active: ${cause}`));
        },
      },
    );
  });
}

/** Agents (each on collector k mod n) send frames of `kind`, WINDOW unacked each; returns what was acked within the window and the CPU spent. */
async function drive(sessions, frameOf, unitsOf, pids, postmaster) {
  const m = { units: 0 };
  let measuring = false;
  let stopping = false;
  let pending = 0;
  let drained = null;
  for (const a of sessions) {
    a.n = 0;
    a.inflight = [];
    const send = () => {
      a.n++;
      const body = frameOf(a);
      a.inflight.push({
        c: body.inner === up.Inner.TextBatch ? a.sess.s.sendText(body.inner, body.body) : a.sess.s.sendNumeric(body.inner, body.body),
        units: unitsOf(body),
      });
      pending++;
    };
    a.sess.h.ack = (counter) => {
      while (a.inflight.length > 0 && a.inflight[0].c <= counter) {
        const f = a.inflight.shift();
        pending--;
        if (measuring) m.units += f.units;
      }
      if (!stopping) while (a.inflight.length < WINDOW) send();
      else if (pending === 0 && drained !== null) drained();
    };
    while (a.inflight.length < WINDOW) send();
  }
  await new Promise((r) => setTimeout(r, WARM_MS));
  const c0 = pids.reduce((s, p) => s + pidCpu(p), 0);
  const d0 = serverCpu(postmaster);
  const t0 = performance.now();
  measuring = true;
  await new Promise((r) => setTimeout(r, MEASURE_MS));
  measuring = false;
  const sec = (performance.now() - t0) / 1000;
  const collectorCpu = pids.reduce((s, p) => s + pidCpu(p), 0) - c0;
  const dbCpu = serverCpu(postmaster) - d0;
  stopping = true;
  if (pending > 0) await new Promise((r) => (drained = r));
  return {
    perSec: m.units / sec,
    collectorCores: collectorCpu / sec,
    dbCores: dbCpu / sec,
    perCollectorCpuSec: m.units / collectorCpu,
    perTotalCpuSec: m.units / (collectorCpu + (dbCpu || 0)),
  };
}

async function runCase(name, storeArgs, env, collectors, postmaster) {
  step(`${name}: ${collectors} collector(s), ${AGENTS} agents`);
  const keyText = cli(['keys', 'create', '--project', 'bench', ...storeArgs], env)
    .trim()
    .split('\n')
    .pop();
  const key = up.parseAccessKey(keyText);
  Object.assign(process.env, env);
  const cs = [];
  for (let i = 0; i < collectors; i++) cs.push(await startCollector(storeArgs, `127.0.0.${i + 1}`));
  const base = Math.floor(Date.now() / 60_000) * 60_000;
  const sessions = [];
  for (let k = 0; k < AGENTS; k++) {
    const c = cs[k % cs.length];
    const input = metricBody(MAX_BODY, base, `host-${String(k).padStart(3, '0')}`);
    sessions.push({ input, sess: await openSession(c.host, c.port, key, `agent-${k}`) });
  }
  step(`${name}: ${sessions.length} sessions active`);
  const pids = cs.map((c) => c.child.pid);
  const metrics = await drive(
    sessions,
    (a) => {
      a.input.patch(a.n);
      return { inner: up.Inner.MetricBatch, body: a.input.body, units: a.input.points };
    },
    (b) => b.units,
    pids,
    postmaster,
  );
  step(`${name}: metrics done`);
  const bodies = traceBodies(MAX_BODY, 16);
  const traces = await drive(
    sessions,
    (a) => {
      const b = bodies[a.n % bodies.length];
      return { inner: up.Inner.TextBatch, body: b.body, units: b.traces };
    },
    (b) => b.units,
    pids,
    postmaster,
  );
  for (const a of sessions) a.sess.s.close('bench done', null);
  for (const c of cs) {
    c.child.kill('SIGTERM');
    await new Promise((r) => c.child.once('exit', r));
    children.delete(c.child);
  }
  return { name, collectors, metrics, traces };
}

async function postgres() {
  if (URL !== undefined) return { url: URL, env: {}, stop: async () => {}, pid: null };
  const helper = join(ROOT, 'test/dist/helpers/postgres.js');
  if (!existsSync(helper)) throw new Error('no PostgreSQL: give --url, or build the tests (npx tsc -b) for test/dist/helpers/postgres.js');
  const pg = await require(helper).startPostgres();
  return { pg, url: pg.url, env: pg.env, stop: () => pg.stop(), pid: pg.pid };
}

async function main() {
  const env = {
    date: new Date().toISOString(),
    node: process.version,
    cores: cpus().length,
    cpu: cpus()[0]?.model,
    loadavgAtStart: loadavg().map((x) => Number(x.toFixed(2))),
  };
  const server = await postgres();
  const cases = [];
  try {
    cases.push(await runCase('sqlite', ['--data-dir', join(tmp, 'sqlite')], {}, 1, null));
    for (const [name, n] of [
      ['postgres ×1', 1],
      ['postgres ×2', 2],
    ]) {
      const url = server.pg !== undefined ? await server.pg.createDatabase(n === 1 ? 'one' : 'two') : server.url;
      cli(['migrate', '--store', url], server.env);
      cases.push(await runCase(name, ['--store', url], server.env, n, server.pid));
    }
  } finally {
    await server.stop();
  }
  env.loadavgAtEnd = loadavg().map((x) => Number(x.toFixed(2)));
  const row = (c, k) => [
    c.name,
    k,
    num(c[k].perSec),
    num(c[k].collectorCores, 2),
    num(c[k].perCollectorCpuSec),
    Number.isNaN(c[k].dbCores) ? '–' : num(c[k].dbCores, 2),
    Number.isNaN(c[k].dbCores) ? '–' : num(c[k].perTotalCpuSec),
  ];
  const rows = cases.flatMap((c) => [row(c, 'metrics'), row(c, 'traces')]);
  const one = cases.find((c) => c.name === 'postgres ×1');
  const two = cases.find((c) => c.name === 'postgres ×2');
  process.stdout.write(
    `\nscale-out, ${env.date.slice(0, 10)}, node ${env.node}, ${env.cores} × ${env.cpu}, load ${env.loadavgAtStart.join(' ')} → ${env.loadavgAtEnd.join(' ')}; ` +
      `${AGENTS} agents, ${WINDOW} frames unacked each, 64 KiB frames; ${MEASURE_MS / 1000} s after ${WARM_MS / 1000} s warm-up\n\n` +
      `${table(['store', 'data', 'per second', 'collector cores', 'per collector CPU-s', 'PostgreSQL cores', 'per CPU-s, collectors + PostgreSQL'], rows)}\n\n` +
      `two collectors over one on PostgreSQL: metrics ${num(two.metrics.perSec / one.metrics.perSec, 2)}×, traces ${num(two.traces.perSec / one.traces.perSec, 2)}× per second\n\n`,
  );
  process.stdout.write(`${JSON.stringify({ bench: 'scale-out', env, agents: AGENTS, cases })}\n`);
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`bench/scale-out: ${err.stack ?? err}\n`);
    process.exit(1);
  },
);
