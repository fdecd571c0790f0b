'use strict';
/**
 * (b) Sidecar ingest: how much a real sidecar process takes in from 4 shim
 * processes, next to a plain socket reading the same bytes without decoding.
 *
 * For each kind (metrics, traces, events), two runs with the same 4 senders and
 * the same bytes (ingest-child.js):
 *
 *   sidecar  node sidecar/dist/cli.js run --transport debug --socket <tmp>/apm.sock
 *              --data-dir <tmp>/data --set debug_output=/dev/null --set log_level=warn
 *              --set flush_ms=1000 --set metric_interval_ms=1000
 *            rate = Δ status counters.received.* over the measured window
 *   raw      raw-sink.js: a node:net Unix server that only counts bytes
 *            rate = Δ bytes ÷ mean frame size ("frames/s equivalent")
 *
 * The window starts after a warm-up; the receiver's CPU comes from
 * /proc/<pid>/stat (utime + stime), so rates per CPU-second of the receiver
 * ("per core") sit beside the wall-clock rates.
 *
 * Floors, measured in this process in the same run, on the same frames (every
 * sender's), per CPU-second of one core:
 *   decoder    proto's decodeShimMessage alone (the sidecar's first step, with a
 *              series cache as the sidecar keeps one)
 *   JSON.parse JSON.parse(body) alone, for the kinds whose body is JSON
 * The raw socket stays as context: it only counts bytes, which is not the same
 * work as decoding them. Counters are read with the same
 * status request `apm-sidecar status --json` makes (in-process, so the timestamps
 * are exact); the CLI itself is run once per sidecar run as a cross-check.
 *
 *   node bench/ingest.js [--json] [--seconds S] [--warmup S] [--kinds metrics,traces,events]
 *                        [--cpu-prof DIR]   (writes the sidecar's .cpuprofile there)
 *                        [--tmp DIR]        (sockets and the sidecar's data dir; default os.tmpdir())
 */
const { fork, spawn, execFile } = require('node:child_process');
const { mkdtempSync, rmSync } = require('node:fs');
const { tmpdir } = require('node:os');
const { join, resolve } = require('node:path');
const { cpuSeconds } = require('./lib/proc');
const { median, num, table } = require('./lib/stats');
const { proto, metricsFrames, traceFrames, eventFrames } = require('./lib/frames');

const ROOT = resolve(__dirname, '..');
const CLI = join(ROOT, 'sidecar/dist/cli.js');
const { requestStatus } = require(join(ROOT, 'sidecar/dist/status-client.js'));
const CHILDREN = 4;

function argv(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Every process this bench starts; killed on any exit path. */
const live = new Set();
function track(cp) {
  live.add(cp);
  cp.once('exit', () => live.delete(cp));
  return cp;
}
function killAll() {
  for (const cp of live) {
    try {
      cp.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
}
process.once('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.once(sig, () => {
    killAll();
    process.exit(130);
  });
}

function waitExit(cp, ms) {
  if (cp.exitCode !== null || cp.signalCode !== null) return Promise.resolve();
  return new Promise((res) => {
    const t = setTimeout(() => {
      cp.kill('SIGKILL');
      res();
    }, ms);
    cp.once('exit', () => {
      clearTimeout(t);
      res();
    });
  });
}

function onceMessage(cp, type, ms, what) {
  return new Promise((res, rej) => {
    const t = setTimeout(() => rej(new Error(`timed out waiting for ${what}`)), ms);
    const h = (m) => {
      if (m && m.type === type) {
        clearTimeout(t);
        cp.off('message', h);
        res(m);
      } else if (m && m.type === 'error') {
        clearTimeout(t);
        cp.off('message', h);
        rej(new Error(`${what}: ${m.message}`));
      }
    };
    cp.on('message', h);
  });
}

async function startSidecar(dir, cpuProfDir) {
  const socket = join(dir, 'apm.sock');
  const nodeArgs = cpuProfDir ? ['--cpu-prof', '--cpu-prof-dir', cpuProfDir] : [];
  const args = [
    ...nodeArgs,
    CLI,
    'run',
    '--transport',
    'debug',
    '--socket',
    socket,
    '--data-dir',
    join(dir, 'data'),
    '--set',
    'debug_output=/dev/null',
    '--set',
    'log_level=warn',
    '--set',
    'flush_ms=1000',
    '--set',
    'metric_interval_ms=1000',
  ];
  const cp = track(spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] }));
  const log = [];
  const keep = (d) => {
    for (const line of d.toString().split('\n')) if (line.trim()) log.push(line.slice(0, 400));
    if (log.length > 50) log.splice(0, log.length - 50);
  };
  cp.stdout.on('data', keep);
  cp.stderr.on('data', keep);
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (cp.exitCode !== null) throw new Error(`sidecar exited with ${cp.exitCode}: ${log.join('\n')}`);
    try {
      await requestStatus(socket, 1000);
      break;
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`sidecar not ready: ${err.message}\n${log.join('\n')}`);
      await sleep(50);
    }
  }
  return {
    pid: cp.pid,
    socket,
    log,
    async snap() {
      const s = await requestStatus(socket, 5000);
      const t = process.hrtime.bigint();
      const c = s.counters;
      return {
        t,
        cpu: cpuSeconds(cp.pid),
        received: { ...c.received },
        sent: { ...c.sent },
        dropped: { ...c.dropped },
        ipcErrors: { ...c.ipcErrors },
        duplicates: c.duplicates,
        bytes: s.shims.reduce((a, x) => a + x.bytes, 0),
        shims: s.shims.length,
      };
    },
    cliStatus() {
      return new Promise((res) => {
        execFile(process.execPath, [CLI, 'status', '--json', '--socket', socket], { timeout: 10_000 }, (err, stdout) => {
          if (err) return res({ error: err.message });
          try {
            const s = JSON.parse(stdout);
            res({ received: s.counters.received, shims: s.shims.length, state: s.state });
          } catch (e) {
            res({ error: e.message });
          }
        });
      });
    },
    async stop() {
      cp.kill('SIGTERM');
      await waitExit(cp, 10_000);
    },
  };
}

async function startRaw(dir) {
  const socket = join(dir, 'raw.sock');
  const cp = track(fork(join(__dirname, 'raw-sink.js'), [socket], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
  await onceMessage(cp, 'listening', 10_000, 'raw sink');
  return {
    pid: cp.pid,
    socket,
    async snap() {
      const p = onceMessage(cp, 'snap', 5000, 'raw sink snapshot');
      cp.send('snap');
      const m = await p;
      return { t: process.hrtime.bigint(), cpu: cpuSeconds(cp.pid), bytes: m.bytes, connections: m.connections };
    },
    async stop() {
      cp.disconnect();
      await waitExit(cp, 5000);
    },
  };
}

async function scenario(kind, mode, { seconds, warmup, cpuProfDir, tmp }) {
  const dir = mkdtempSync(join(tmp, 'apm-bench-'));
  let receiver = null;
  const children = [];
  try {
    receiver = mode === 'sidecar' ? await startSidecar(dir, cpuProfDir) : await startRaw(dir);
    for (let i = 0; i < CHILDREN; i++) {
      const cp = track(fork(join(__dirname, 'ingest-child.js'), [mode, kind, receiver.socket, String(i)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
      children.push(cp);
    }
    const ready = await Promise.all(children.map((cp, i) => onceMessage(cp, 'ready', 20_000, `sender ${i}`)));
    const frameBytes = ready.reduce((s, m) => s + m.frameBytes, 0) / ready.length;
    for (const cp of children) cp.send('go');
    await sleep(warmup * 1000);
    const childCpu0 = children.reduce((s, cp) => s + cpuSeconds(cp.pid), 0);
    const a = await receiver.snap();
    await sleep(seconds * 1000);
    const b = await receiver.snap();
    const childCpu1 = children.reduce((s, cp) => s + cpuSeconds(cp.pid), 0);
    const cli = mode === 'sidecar' ? await receiver.cliStatus() : null;
    const done = await Promise.all(
      children.map((cp, i) => {
        const p = onceMessage(cp, 'done', 10_000, `sender ${i} report`);
        cp.send('stop');
        return p;
      }),
    );
    const wall = Number(b.t - a.t) / 1e9;
    const cpu = b.cpu - a.cpu;
    const res = {
      kind,
      mode,
      wallSeconds: wall,
      receiverCpuSeconds: cpu,
      receiverCores: cpu / wall,
      sendersCores: (childCpu1 - childCpu0) / wall,
      frameBytes,
      bytesPerSec: (b.bytes - a.bytes) / wall,
      senderStats: done.map((m) => m.stats),
    };
    if (mode === 'sidecar') {
      const d = (k) => b.received[k] - a.received[k];
      if (kind === 'metrics') {
        const ppf = done[0].stats.pointsPerFrame;
        const spp = done[0].stats.samplesPerPoint;
        res.pointsPerFrame = ppf;
        res.samplesPerPoint = spp;
        res.points = d('metrics');
        res.frames = res.points / ppf;
        res.samples = res.points * spp;
      } else {
        res.frames = d(kind);
      }
      res.framesPerSec = res.frames / wall;
      res.framesPerCpuSec = res.frames / cpu;
      if (kind === 'metrics') {
        res.pointsPerSec = res.points / wall;
        res.samplesPerSec = res.samples / wall;
        res.pointsPerCpuSec = res.points / cpu;
        res.samplesPerCpuSec = res.samples / cpu;
      }
      res.dropped = Object.fromEntries(Object.entries(b.dropped).map(([k, v]) => [k, v - (a.dropped[k] ?? 0)]));
      res.ipcErrors = b.ipcErrors;
      res.duplicates = b.duplicates - a.duplicates;
      res.shims = b.shims;
      res.sent = Object.fromEntries(Object.entries(b.sent).map(([k, v]) => [k, v - a.sent[k]]));
      res.cliStatus = cli;
      res.sidecarLog = receiver.log.slice(-5);
    } else {
      res.frames = (b.bytes - a.bytes) / frameBytes;
      res.framesPerSec = res.frames / wall;
      res.framesPerCpuSec = res.frames / cpu;
      res.connections = b.connections;
    }
    return res;
  } finally {
    for (const cp of children) {
      if (cp.connected) cp.disconnect();
      await waitExit(cp, 5000);
    }
    if (receiver !== null) await receiver.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Whether a body is JSON (events, snapshots, active stacks; traces until IPC protocol 3). */
function isJson(body) {
  try {
    JSON.parse(body.toString('utf8'));
    return true;
  } catch {
    return false;
  }
}

/** Frames per CPU-second of `fn` over every payload, median of rounds (this process, one core). */
function perCpuSecond(payloads, fn, rounds = 7, roundMs = 150) {
  const t0 = Date.now();
  while (Date.now() - t0 < roundMs) for (const p of payloads) fn(p); // warm-up: JIT, caches
  const rates = [];
  for (let r = 0; r < rounds; r++) {
    const c0 = process.cpuUsage();
    const w0 = Date.now();
    let n = 0;
    while (Date.now() - w0 < roundMs) {
      for (const p of payloads) fn(p);
      n += payloads.length;
    }
    const c = process.cpuUsage(c0);
    rates.push(n / ((c.user + c.system) / 1e6));
  }
  return median(rates);
}

/** The floors of one kind: its senders' frames through the proto decoder alone and, for JSON bodies, JSON.parse alone. */
function floors(kind) {
  const frames = [];
  for (let i = 0; i < CHILDREN; i++) {
    if (kind === 'metrics') frames.push(...metricsFrames(i).frames);
    else frames.push(...(kind === 'traces' ? traceFrames(i) : eventFrames(i)));
  }
  const payloads = frames.map((f) => ({ type: f[4], body: f.subarray(5) }));
  const seriesCache = new Map();
  const decoder = perCpuSecond(payloads, (p) => proto.decodeShimMessage(p.type, p.body, seriesCache));
  const jsonBodies = payloads.every((p) => isJson(p.body));
  const json = jsonBodies ? perCpuSecond(payloads, (p) => JSON.parse(p.body.toString('utf8'))) : null;
  // Context for binary traces: JSON.parse of the same traces as JSON bodies (their protocol-2 form).
  const asJson = kind === 'traces' && !jsonBodies ? payloads.map((p) => Buffer.from(JSON.stringify(proto.decodeTrace(p.body)))) : null;
  const traceJson =
    asJson === null
      ? null
      : { bytes: asJson.reduce((a, b) => a + b.length, 0) / asJson.length, perCpuSec: perCpuSecond(asJson, (b) => JSON.parse(b.toString('utf8'))) };
  return { frameType: proto.messageTypeName(payloads[0].type), decoderPerCpuSec: decoder, jsonParsePerCpuSec: json, traceJson };
}

async function run({
  seconds = Number(argv('--seconds', 5)),
  warmup = Number(argv('--warmup', 2)),
  kinds = argv('--kinds', 'metrics,traces,events').split(','),
  cpuProfDir = argv('--cpu-prof', undefined),
  tmp = argv('--tmp', tmpdir()),
} = {}) {
  const results = [];
  const floor = {};
  for (const kind of kinds) {
    floor[kind] = floors(kind);
    for (const mode of ['sidecar', 'raw']) {
      results.push(await scenario(kind, mode, { seconds, warmup, tmp, cpuProfDir: mode === 'sidecar' ? cpuProfDir : undefined }));
    }
  }
  const pairs = kinds.map((kind) => {
    const s = results.find((r) => r.kind === kind && r.mode === 'sidecar');
    const r = results.find((x) => x.kind === kind && x.mode === 'raw');
    const f = floor[kind];
    return {
      kind,
      sidecar: s,
      raw: r,
      floor: f,
      decoderRatio: s.framesPerCpuSec / f.decoderPerCpuSec,
      jsonParseRatio: f.jsonParsePerCpuSec === null ? null : s.framesPerCpuSec / f.jsonParsePerCpuSec,
      wallRatio: s.framesPerSec / r.framesPerSec,
      cpuRatio: s.framesPerCpuSec / r.framesPerCpuSec,
    };
  });
  return { seconds, warmup, tmp, senders: CHILDREN, results, pairs };
}

const MB = 1024 * 1024;

function report(res) {
  const rows = [];
  for (const p of res.pairs) {
    const s = p.sidecar;
    const r = p.raw;
    const unit = p.kind === 'metrics' ? 'metrics frames' : `${p.kind.slice(0, -1)} frames`;
    rows.push([
      `${unit} (${p.floor.frameType}, ${num(s.frameBytes)} B)`,
      num(s.framesPerSec),
      num(s.framesPerCpuSec),
      num(s.receiverCores, 2),
      num(p.floor.decoderPerCpuSec),
      `${num(p.decoderRatio * 100, 1)}%`,
      p.jsonParseRatio === null ? '—' : num(p.floor.jsonParsePerCpuSec),
      p.jsonParseRatio === null ? '—' : `${num(p.jsonParseRatio * 100, 1)}%`,
      num(r.framesPerCpuSec),
    ]);
  }
  const lines = [
    table(
      [
        'frames',
        'sidecar /s',
        'sidecar /CPU-s',
        'sidecar cores',
        'floor: decoder alone /CPU-s',
        'sidecar ÷ decoder',
        'floor: JSON.parse alone /CPU-s',
        'sidecar ÷ JSON.parse',
        'context: raw socket /CPU-s',
      ],
      rows,
    ),
  ];
  const t = res.pairs.find((p) => p.kind === 'traces');
  if (t?.floor.traceJson) {
    const j = t.floor.traceJson;
    lines.push(
      '',
      `traces: the same traces as JSON bodies (${num(j.bytes)} B, their IPC protocol 2 form): JSON.parse alone ${num(j.perCpuSec)} /CPU-s; the sidecar takes ${num((t.sidecar.framesPerCpuSec / j.perCpuSec) * 100, 1)}% of that.`,
    );
  }
  const m = res.results.find((x) => x.kind === 'metrics' && x.mode === 'sidecar');
  if (m) {
    lines.push(
      '',
      `metrics: ${num(m.pointsPerSec)} points/s (${num(m.pointsPerCpuSec)} per sidecar CPU-second) = ${num(m.samplesPerSec)} samples/s (${num(m.samplesPerCpuSec)} per CPU-second);`,
      `         a point is one series' aggregate from one shim flush (count/sum/min/max + sketch); it carries count = ${m.samplesPerPoint} recorded values ("samples"), ${m.pointsPerFrame} points per frame.`,
    );
  }
  for (const x of res.results) {
    const extra = [];
    if (x.mode === 'sidecar') {
      const dropped = Object.entries(x.dropped).filter(([, v]) => v > 0);
      extra.push(`dropped ${dropped.length ? dropped.map(([k, v]) => `${k}=${num(v)}`).join(' ') : 'none'}`);
      if (Object.keys(x.ipcErrors).length) extra.push(`ipcErrors ${JSON.stringify(x.ipcErrors)}`);
      if (x.duplicates) extra.push(`duplicates ${x.duplicates}`);
      extra.push(`shims ${x.shims}`);
    }
    lines.push(
      `  ${x.kind}/${x.mode}: ${num(x.bytesPerSec / MB, 1)} MiB/s in, receiver ${num(x.receiverCores, 2)} cores, senders ${num(x.sendersCores, 2)} cores${extra.length ? `, ${extra.join(', ')}` : ''}`,
    );
  }
  return lines.join('\n');
}

module.exports = { run, report };

if (require.main === module) {
  run().then(
    (res) => {
      process.stdout.write(process.argv.includes('--json') ? `${JSON.stringify(res)}\n` : `${report(res)}\n`);
    },
    (err) => {
      process.stderr.write(`${err.stack}\n`);
      killAll();
      process.exit(1);
    },
  );
}
