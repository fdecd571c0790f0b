'use strict';
/**
 * Upstream handshake time, TCP connect → active, next to floors measured in the same run.
 *
 *   node bench/handshake.js [--n N] [--quick] [--json] [--cpu-prof DIR]
 *
 *   --n         measured sessions per variant (default 300; --quick 60), after 20 warm-up ones
 *   --json      print one JSON object instead of the table
 *   --cpu-prof  write the collector's and the sink's CPU profiles into DIR (summarize with
 *               `node bench/tools/profile-summary.js FILE`); for this process's side (the
 *               agent), run `node --cpu-prof --cpu-prof-dir DIR bench/handshake.js`
 *
 * Variants, one session at a time, in rotating order (a, b, c, d, a, b, …) so that the
 * machine's load hits them alike:
 *
 *   collector   the sidecar's UpstreamSession (sidecar/dist) to a real `apm-collector run`
 *               (SQLite store, log level info): TCP connect, ClientHello → ServerHello,
 *               ClientFinished + AgentInfo → Config + License, i.e. `active`. The same agent
 *               id every time, as a sidecar reconnecting.
 *   sink        the same session to bench/lib/upstream-sink.js: the proto handshake classes
 *               and the same messages, no store, no log, no license pool.
 *   floor, 2 RT a bare TCP connect, then two request/reply round trips of the handshake's
 *               own sizes to bench/lib/rtt-server.js (node:net, replies at once): the same
 *               shape on the wire with nothing computed.
 *   floor, 1 RT a bare TCP connect and one round trip.
 *
 * Each client is in this process, each server in its own process. CPU per session comes
 * from process.cpuUsage() around each session (this process, the agent's side) and from
 * the scheduler counters (/proc/PID/task/TID/schedstat) of the server over the run ÷ its sessions (the servers are
 * idle between their turns).
 */
const { execFileSync, spawn } = require('node:child_process');
const { mkdtempSync, readdirSync, readFileSync, rmSync } = require('node:fs');
const { connect } = require('node:net');
const { cpus, loadavg, tmpdir } = require('node:os');
const { join, resolve } = require('node:path');
const { performance } = require('node:perf_hooks');
const { cpuSeconds } = require('./lib/proc');
const { median, num, quantile, table } = require('./lib/stats');

const ROOT = resolve(__dirname, '..');
const up = require(join(ROOT, 'proto/dist/upstream/index.js'));
const { UpstreamSession } = require(join(ROOT, 'sidecar/dist/upstream/session.js'));

function arg(name, def) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : def;
}
const quick = process.argv.includes('--quick');
const WARMUP = 20;
const CLI = join(ROOT, 'collector/dist/cli.js');

const children = new Set();
let tmp = null;
function cleanup() {
  for (const c of children) {
    try {
      c.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
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

/** CPU seconds of `pid` (all threads) from the scheduler's ns counters; utime + stime without schedstat. */
function taskCpuSeconds(pid) {
  try {
    let ns = 0;
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
      } catch {
        // the thread ended meanwhile
      }
    }
    if (ns > 0) return ns / 1e9;
  } catch {
    // no /proc/PID/task
  }
  return cpuSeconds(pid);
}

/** Spawn a node script; resolve with the child and what `match` returns for the first stdout JSON line it accepts. */
function startChild(script, args, env, match, what, cpuProfDir) {
  const nodeArgs = cpuProfDir !== undefined ? ['--cpu-prof', '--cpu-prof-dir', cpuProfDir] : [];
  const c = spawn(process.execPath, [...nodeArgs, script, ...args], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
  children.add(c);
  let stderr = '';
  c.stderr.on('data', (d) => {
    stderr = (stderr + d).slice(-4000);
  });
  return new Promise((res, rej) => {
    let buf = '';
    let found = false;
    const t = setTimeout(() => rej(new Error(`${what} did not start within 15 s: ${stderr}`)), 15_000);
    c.on('exit', (code) => {
      if (!found) {
        clearTimeout(t);
        rej(new Error(`${what} exited with ${code} before listening: ${stderr}`));
      }
    });
    c.stdout.on('data', (d) => {
      if (found) return; // keep draining the pipe
      buf += d;
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        let o = null;
        try {
          o = JSON.parse(line);
        } catch {
          continue;
        }
        const v = match(o);
        if (v !== undefined) {
          found = true;
          clearTimeout(t);
          res({ child: c, value: v });
          return;
        }
      }
    });
  });
}

/** SIGTERM (so --cpu-prof profiles get written), then SIGKILL after 5 s. */
async function stop(c) {
  if (c.exitCode === null && c.signalCode === null) {
    const gone = new Promise((r) => c.once('exit', r));
    c.kill('SIGTERM');
    const t = setTimeout(() => c.kill('SIGKILL'), 5000);
    await gone;
    clearTimeout(t);
  }
  children.delete(c);
}

/** One UpstreamSession to 127.0.0.1:port, closed once active; resolves with its time and byte counts. */
function session(port, key, agentId) {
  return new Promise((res, rej) => {
    let done = false;
    const t0 = performance.now();
    const s = new UpstreamSession(
      {
        host: '127.0.0.1',
        port,
        key,
        agentInfo: { agentId, host: 'bench', version: '0.1.0', apps: ['bench'] },
        connectTimeoutMs: 5000,
        soTimeoutMs: 60_000,
        maxFrameBytes: 1 << 20,
      },
      {
        active: () => {
          const ms = performance.now() - t0;
          done = true;
          const r = { ms, sent: s.bytesSent, received: s.bytesReceived };
          s.close('bench done', null);
          res(r);
        },
        ack: () => {},
        drain: () => {},
        closed: (cause) => {
          if (!done) {
            done = true;
            rej(new Error(`session closed before active: ${cause}`));
          }
        },
      },
    );
  });
}

/** TCP connect, then one request/reply per entry of `rounds` ([request bytes, reply bytes]), then close. */
function floor(port, rounds) {
  return new Promise((res, rej) => {
    const t0 = performance.now();
    const s = connect({ host: '127.0.0.1', port });
    s.setNoDelay(true);
    let i = 0;
    let want = 0;
    const ask = () => {
      const [reqBytes, replyBytes] = rounds[i];
      const b = Buffer.alloc(Math.max(8, reqBytes), 0xa5);
      b.writeUInt32LE(b.length - 4, 0);
      b.writeUInt32LE(replyBytes, 4);
      want = replyBytes;
      s.write(b);
    };
    s.on('connect', ask);
    s.on('data', (c) => {
      want -= c.length;
      if (want > 0) return;
      if (++i < rounds.length) {
        ask();
        return;
      }
      const ms = performance.now() - t0;
      s.destroy();
      res({ ms });
    });
    s.on('error', rej);
  });
}

function summary(xs, cpuUs) {
  return {
    n: xs.length,
    medianMs: median(xs),
    p90Ms: quantile(xs, 0.9),
    p99Ms: quantile(xs, 0.99),
    maxMs: Math.max(...xs),
    agentCpuUsMedian: median(cpuUs),
  };
}

async function run({ n = Number(arg('--n', quick ? 60 : 300)), cpuProfDir = arg('--cpu-prof', undefined) } = {}) {
  const env = {
    date: new Date().toISOString(),
    node: process.version,
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    loadavgAtStart: loadavg().map((x) => Number(x.toFixed(2))),
  };
  tmp = mkdtempSync(join(tmpdir(), 'apm-bench-handshake-'));
  const dataDir = join(tmp, 'collector');
  const keyText = execFileSync(process.execPath, [CLI, 'keys', 'create', '--project', 'bench', '--data-dir', dataDir], { encoding: 'utf8' })
    .trim()
    .split('\n')
    .pop();
  const key = up.parseAccessKey(keyText);
  const col = await startChild(
    CLI,
    ['run', '--host', '127.0.0.1', '--port', '0', '--http', '127.0.0.1:0', '--data-dir', dataDir, '--log-level', 'info'],
    {},
    (o) => (o.msg === 'listening' ? o.agents.port : undefined),
    'collector',
    cpuProfDir,
  );
  const sink = await startChild(join(__dirname, 'lib/upstream-sink.js'), [], { APM_BENCH_KEY: keyText }, (o) => o.port, 'sink', cpuProfDir);
  const rtt = await startChild(join(__dirname, 'lib/rtt-server.js'), [], {}, (o) => o.port, 'rtt server');

  // The handshake's own sizes per round trip, for the 2-RT floor: ClientHello → ServerHello,
  // then ClientFinished + AgentInfo → Config + License.
  const probe = await session(sink.value, key, 'open:probe');
  const helloBytes = new up.ClientHandshake({ ...require('tweetnacl'), ...up.nodeX25519 }, key, 'bench-handshake').hello().length;
  const serverHelloBytes = 5 + 96;
  const rounds2 = [
    [helloBytes, serverHelloBytes],
    [probe.sent - helloBytes, probe.received - serverHelloBytes],
  ];

  const variants = [
    { key: 'collector', name: 'collector (real, SQLite): connect → active', pid: col.child.pid, go: () => session(col.value, key, 'bench-handshake') },
    { key: 'sink', name: 'sink (proto classes, no store): connect → active', pid: sink.child.pid, go: () => session(sink.value, key, 'open:handshake') },
    {
      key: 'floor2',
      name: `floor: TCP connect + 2 round trips (${rounds2.map(([a, b]) => `${a}→${b} B`).join(', ')})`,
      pid: rtt.child.pid,
      go: () => floor(rtt.value, rounds2),
    },
    {
      key: 'floor1',
      name: `floor: TCP connect + 1 round trip (${helloBytes}→${serverHelloBytes} B)`,
      pid: rtt.child.pid,
      go: () => floor(rtt.value, [rounds2[0]]),
    },
  ];
  const ms = Object.fromEntries(variants.map((v) => [v.key, []]));
  const cpuUs = Object.fromEntries(variants.map((v) => [v.key, []]));
  for (let i = 0; i < WARMUP; i++) for (const v of variants) await v.go();
  const serverCpu0 = Object.fromEntries(variants.map((v) => [v.key, taskCpuSeconds(v.pid)]));
  for (let i = 0; i < n; i++) {
    // Rotate the order, so no variant always runs right after the same other one.
    for (let j = 0; j < variants.length; j++) {
      const v = variants[(i + j) % variants.length];
      const c0 = process.cpuUsage();
      const r = await v.go();
      const c = process.cpuUsage(c0);
      ms[v.key].push(r.ms);
      cpuUs[v.key].push(c.user + c.system);
    }
  }
  const serverCpu1 = Object.fromEntries(variants.map((v) => [v.key, taskCpuSeconds(v.pid)]));
  await Promise.all([stop(col.child), stop(sink.child), stop(rtt.child)]);
  env.loadavgAtEnd = loadavg().map((x) => Number(x.toFixed(2)));
  const rows = variants.map((v) => {
    const s = summary(ms[v.key], cpuUs[v.key]);
    // The floors share one server process: split its CPU between them by their session counts.
    const sessions = v.key.startsWith('floor') ? 2 * n : n;
    return { key: v.key, name: v.name, ...s, serverCpuUsPerSession: ((serverCpu1[v.key] - serverCpu0[v.key]) * 1e6) / sessions };
  });
  return { bench: 'handshake', env, n, warmup: WARMUP, rounds2, rows };
}

function report(res) {
  const floor2 = res.rows.find((r) => r.key === 'floor2');
  const rows = res.rows.map((r) => [
    r.name,
    String(r.n),
    num(r.medianMs, 2),
    num(r.p90Ms, 2),
    num(r.p99Ms, 2),
    num(r.maxMs, 2),
    `${num(r.medianMs / floor2.medianMs, 2)}×`,
    num(r.agentCpuUsMedian, 0),
    r.key.startsWith('floor') ? `${num(r.serverCpuUsPerSession, 0)} (shared)` : num(r.serverCpuUsPerSession, 0),
  ]);
  const e = res.env;
  return (
    `handshake, ${e.date}, node ${e.node}, ${e.cores} × ${e.cpu}, load ${e.loadavgAtStart.join('/')} → ${e.loadavgAtEnd.join('/')}; ` +
    `${res.n} sessions per variant after ${res.warmup} warm-up, in rotation\n` +
    `${table(['TCP connect → …', 'n', 'median ms', 'p90 ms', 'p99 ms', 'max ms', 'median ÷ 2-RT floor', 'agent CPU µs (median)', 'server CPU µs/session'], rows)}\n`
  );
}

module.exports = { run, report };

if (require.main === module) {
  run().then(
    (res) => {
      process.stdout.write(process.argv.includes('--json') ? `${JSON.stringify(res)}\n` : report(res));
      process.exit(0);
    },
    (err) => {
      process.stderr.write(`bench/handshake: ${err.stack ?? err}\n`);
      cleanup();
      process.exit(1);
    },
  );
}
