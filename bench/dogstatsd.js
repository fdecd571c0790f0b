'use strict';
/**
 * (j) DogStatsD ingest: the sidecar's `dogstatsd_udp` listener next to Etsy `statsd` 0.9.0 (the
 * reference StatsD server, also Node), fed the same datagrams at the same offered rates by one
 * sender process (dogstatsd-sender.js, datagrams from lib/dogstatsd-lines.js).
 *
 *   sidecar  node sidecar/dist/cli.js run --transport debug --set debug_output=/dev/null
 *              --set dogstatsd_udp=127.0.0.1:<port> --set flush_ms=1000 (metric_interval_ms 10000, the default)
 *            lines = Δ status dogstatsd.lines; refusals = Δ dogstatsd.invalid
 *   floor    lib/udp-floor.js: the same socket, each datagram taken and its lines counted, nothing parsed
 *            (what any Node StatsD server pays before its first line of parsing; context, not a peer)
 *   statsd   node node_modules/statsd/stats.js <config>: flushInterval 1000, the sink backend
 *            lib/statsd-sink-backend.js (discards flushes, counts statsd.metrics_received), its UDP
 *            server with the sidecar's 4 MiB receive buffer (lib/statsd-udp-server.js); no network
 *            beyond loopback
 *
 * Each run: a fresh receiver, a warm-up at the offered rate, then a measured window at the same rate;
 * the window ends when the receiver has counted every line sent (or nothing more arrives for 1 s).
 * CPU per line = Δ(utime + stime) of the receiver from /proc/<pid>/stat ÷ lines it processed. Loss =
 * lines sent − lines counted by the receiver, reported, never hidden.
 *
 *   node bench/dogstatsd.js [--json] [--rates 100000,200000] [--seconds 5] [--warmup 2] [--series 1000]
 *                           [--receivers sidecar,statsd] [--growth 1000,10000,100000] [--growth-rate 100000]
 *                           [--cpu-prof DIR] [--sidecar-cli FILE]
 *
 *   --growth     instead of the peer comparison: the sidecar alone at the given series counts
 *                (CPU per line = per DogStatsD point received, and per series flushed)
 */
const { fork, spawn } = require('node:child_process');
const { createSocket } = require('node:dgram');
const { mkdirSync, mkdtempSync, rmSync, writeFileSync } = require('node:fs');
const { createServer } = require('node:net');
const { tmpdir } = require('node:os');
const { join, resolve } = require('node:path');
const { cpuSeconds } = require('./lib/proc');
const { num, table } = require('./lib/stats');

const ROOT = resolve(__dirname, '..');
const { requestStatus } = require(join(ROOT, 'sidecar/dist/status-client.js'));

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
      }
    };
    cp.on('message', h);
  });
}

/** A port free on 127.0.0.1 for `kind` ('udp' or 'tcp') at the time of asking. */
function freePort(kind) {
  return new Promise((res, rej) => {
    if (kind === 'udp') {
      const s = createSocket('udp4');
      s.once('error', rej);
      s.bind(0, '127.0.0.1', () => {
        const { port } = s.address();
        s.close(() => res(port));
      });
    } else {
      const s = createServer();
      s.once('error', rej);
      s.listen(0, '127.0.0.1', () => {
        const { port } = s.address();
        s.close(() => res(port));
      });
    }
  });
}

function keepLog(cp) {
  const log = [];
  const keep = (d) => {
    for (const line of d.toString().split('\n')) if (line.trim()) log.push(line.slice(0, 400));
    if (log.length > 50) log.splice(0, log.length - 50);
  };
  cp.stdout?.on('data', keep);
  cp.stderr?.on('data', keep);
  return log;
}

async function startSidecar(dir, port, { cpuProfDir, sidecarCli, maxSeries }) {
  const socket = join(dir, 'apm.sock');
  const nodeArgs = cpuProfDir ? ['--cpu-prof', '--cpu-prof-dir', cpuProfDir, '--cpu-prof-name', `sidecar-dogstatsd-${Date.now()}.cpuprofile`] : [];
  const set = (kv) => ['--set', kv];
  const args = [
    ...nodeArgs,
    sidecarCli,
    'run',
    '--transport',
    'debug',
    '--socket',
    socket,
    '--data-dir',
    join(dir, 'data'),
    ...set('debug_output=/dev/null'),
    ...set('log_level=warn'),
    ...set('flush_ms=1000'),
    ...set(`dogstatsd_udp=127.0.0.1:${port}`),
    ...(maxSeries ? set(`max_series=${maxSeries}`) : []),
  ];
  const cp = track(spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] }));
  const log = keepLog(cp);
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (cp.exitCode !== null) throw new Error(`sidecar exited with ${cp.exitCode}: ${log.join('\n')}`);
    try {
      const s = await requestStatus(socket, 1000);
      if (s.dogstatsd?.udpPort === port) break;
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`sidecar not ready: ${err.message}\n${log.join('\n')}`);
    }
    await sleep(50);
  }
  return {
    name: 'sidecar',
    pid: cp.pid,
    log,
    async counts() {
      const s = await requestStatus(socket, 5000);
      const d = s.dogstatsd;
      return {
        lines: d.lines,
        packets: d.packets,
        refused: d.invalid,
        refusedByReason: d.invalidByReason,
        dropped: Object.values(s.counters.dropped).reduce((a, b) => a + b, 0),
        aggregation: s.aggregation,
      };
    },
    async stop() {
      cp.kill('SIGTERM');
      await waitExit(cp, 15_000);
    },
  };
}

async function startStatsd(dir, port, { cpuProfDir }) {
  const config = {
    port,
    address: '127.0.0.1',
    mgmt_address: '127.0.0.1',
    mgmt_port: await freePort('tcp'),
    flushInterval: 1000,
    backends: [join(__dirname, 'lib/statsd-sink-backend.js')],
    servers: [{ server: join(__dirname, 'lib/statsd-udp-server.js'), port, address: '127.0.0.1' }],
    automaticConfigReload: false,
  };
  const file = join(dir, 'statsd-config.js');
  writeFileSync(file, `(${JSON.stringify(config, null, 2)})\n`);
  const execArgv = cpuProfDir ? ['--cpu-prof', '--cpu-prof-dir', cpuProfDir, '--cpu-prof-name', `statsd-${Date.now()}.cpuprofile`] : [];
  const cp = track(fork(require.resolve('statsd/stats.js', { paths: [__dirname] }), [file], { stdio: ['ignore', 'pipe', 'pipe', 'ipc'], execArgv, cwd: dir }));
  const log = keepLog(cp);
  await onceMessage(cp, 'ready', 15_000, 'statsd first flush').catch((err) => {
    throw new Error(`${err.message}\n${log.join('\n')}`);
  });
  return {
    name: 'statsd',
    pid: cp.pid,
    log,
    async counts() {
      const p = onceMessage(cp, 'counts', 5000, 'statsd counts');
      cp.send('counts');
      const m = await p;
      return { lines: m.lines, packets: m.packets, refused: m.bad, dropped: 0 };
    },
    async stop() {
      // statsd flushes nothing on exit; SIGTERM lets --cpu-prof write its profile.
      cp.kill('SIGTERM');
      await waitExit(cp, 10_000);
    },
  };
}

async function startFloor(port) {
  const cp = track(fork(join(__dirname, 'lib/udp-floor.js'), [String(port)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
  await onceMessage(cp, 'ready', 10_000, 'UDP floor');
  return {
    name: 'floor',
    pid: cp.pid,
    log: [],
    async counts() {
      const p = onceMessage(cp, 'counts', 5000, 'floor counts');
      cp.send('counts');
      const m = await p;
      return { lines: m.lines, packets: m.packets, refused: 0, dropped: 0 };
    },
    async stop() {
      cp.disconnect();
      await waitExit(cp, 5000);
    },
  };
}

/** Offer `rate` lines/s for `seconds`; resolves with what the sender sent. */
async function offer(sender, rate, seconds) {
  const p = onceMessage(sender, 'done', (seconds + 30) * 1000, 'sender report');
  sender.send({ type: 'go', rate, seconds });
  return p;
}

/** Wait until the receiver has counted `target` lines, or its count stood still for 1 s. */
async function settle(receiver, target) {
  let last = -1;
  let still = Date.now();
  for (;;) {
    const c = await receiver.counts();
    if (c.lines >= target) return c;
    if (c.lines !== last) {
      last = c.lines;
      still = Date.now();
    } else if (Date.now() - still > 1000) return c;
    await sleep(50);
  }
}

async function scenario(kind, rate, { seconds, warmup, series, cpuProfDir, sidecarCli, maxSeries, tmp }) {
  const dir = mkdtempSync(join(tmp, 'apm-bench-dsd-'));
  let receiver = null;
  let sender = null;
  try {
    const port = await freePort('udp');
    receiver =
      kind === 'sidecar'
        ? await startSidecar(dir, port, { cpuProfDir, sidecarCli, maxSeries })
        : kind === 'statsd'
          ? await startStatsd(dir, port, { cpuProfDir })
          : await startFloor(port);
    sender = track(fork(join(__dirname, 'dogstatsd-sender.js'), [String(port), String(series)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
    await onceMessage(sender, 'ready', 60_000, 'sender');
    const c0 = await receiver.counts();
    const w = await offer(sender, rate, warmup);
    const a = await settle(receiver, c0.lines + w.lines);
    const t0 = process.hrtime.bigint();
    const cpu0 = cpuSeconds(receiver.pid);
    const scpu0 = cpuSeconds(sender.pid);
    const sent = await offer(sender, rate, seconds);
    const scpu1 = cpuSeconds(sender.pid);
    const b = await settle(receiver, a.lines + sent.lines);
    const cpu1 = cpuSeconds(receiver.pid);
    const wall = Number(process.hrtime.bigint() - t0) / 1e9;
    const lines = b.lines - a.lines;
    const cpu = cpu1 - cpu0;
    const res = {
      receiver: kind,
      rate,
      series,
      seconds,
      wallSeconds: wall,
      linesSent: sent.lines,
      packetsSent: sent.packets,
      linesPerPacket: sent.lines / sent.packets,
      bytesPerPacket: sent.bytes / sent.packets,
      linesReceived: lines,
      packetsReceived: b.packets - a.packets,
      lost: sent.lines - lines,
      warmupLost: w.lines - (a.lines - c0.lines),
      refused: b.refused - a.refused,
      receiverCpuSeconds: cpu,
      receiverCores: cpu / wall,
      senderCores: (scpu1 - scpu0) / (sent.lines / rate),
      usPerLine: lines > 0 ? (cpu * 1e6) / lines : Number.NaN,
      senderLateMs: sent.lateMs,
    };
    if (kind === 'sidecar') {
      res.refusedByReason = b.refusedByReason;
      res.droppedInSidecar = b.dropped - a.dropped;
      res.aggregation = b.aggregation;
    }
    return res;
  } finally {
    if (sender !== null) {
      if (sender.connected) sender.disconnect();
      await waitExit(sender, 5000);
    }
    if (receiver !== null) await receiver.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function run({
  rates = argv('--rates', '100000,200000').split(',').map(Number),
  seconds = Number(argv('--seconds', 5)),
  warmup = Number(argv('--warmup', 2)),
  series = Number(argv('--series', 1000)),
  receivers = argv('--receivers', 'sidecar,statsd,floor').split(','),
  growth = argv('--growth', undefined)?.split(',').map(Number),
  growthRate = Number(argv('--growth-rate', 100000)),
  cpuProfDir = argv('--cpu-prof', undefined),
  sidecarCli = argv('--sidecar-cli', join(ROOT, 'sidecar/dist/cli.js')),
  tmp = argv('--tmp', tmpdir()),
} = {}) {
  if (cpuProfDir !== undefined) {
    cpuProfDir = resolve(cpuProfDir);
    mkdirSync(cpuProfDir, { recursive: true });
  }
  const o = { seconds, warmup, series, cpuProfDir, sidecarCli: resolve(sidecarCli), tmp };
  const results = [];
  const growthRows = [];
  if (growth !== undefined) {
    for (const n of growth) {
      // max_series above the series count times the open intervals, so no point is refused by the bound.
      // The warm-up sends the sender's ring (≈ 1.3 lines per series) twice, so the window measures a steady state, not first sightings.
      const warm = Math.max(warmup, Math.ceil((2.6 * n) / growthRate));
      growthRows.push(await scenario('sidecar', growthRate, { ...o, warmup: warm, series: n, maxSeries: Math.max(100_000, n * 4) }));
    }
  } else {
    for (const rate of rates) for (const kind of receivers) results.push(await scenario(kind, rate, o));
  }
  const pairs = rates
    .map((rate) => {
      const s = results.find((r) => r.receiver === 'sidecar' && r.rate === rate);
      const p = results.find((r) => r.receiver === 'statsd' && r.rate === rate);
      return s && p ? { rate, sidecar: s, statsd: p, ratio: p.usPerLine / s.usPerLine } : null;
    })
    .filter((x) => x !== null);
  return { seconds, warmup, series, results, pairs, growth: growthRows };
}

function report(res) {
  const out = [];
  if (res.results.length > 0) {
    out.push(
      `(j) DogStatsD over UDP: the sidecar's dogstatsd_udp next to Etsy statsd 0.9.0, same datagrams, same offered rates (${res.series} series, ${res.seconds} s window after ${res.warmup} s warm-up)`,
    );
    out.push(
      table(
        ['receiver', 'offered lines/s', 'lines/packet, B/packet', 'lines sent', 'lines counted', 'lost', 'refused', 'receiver cores', 'CPU µs/line'],
        res.results.map((r) => [
          { statsd: 'statsd 0.9.0', sidecar: 'sidecar', floor: 'floor: receive + count lines' }[r.receiver],
          num(r.rate),
          `${num(r.linesPerPacket, 1)}, ${num(r.bytesPerPacket)}`,
          num(r.linesSent),
          num(r.linesReceived),
          `${num(r.lost)}${r.lost > 0 ? ` (${num((100 * r.lost) / r.linesSent, 2)}%)` : ''}`,
          num(r.refused),
          num(r.receiverCores, 2),
          num(r.usPerLine, 2),
        ]),
      ),
    );
    for (const p of res.pairs) {
      out.push(
        `  ${num(p.rate)} lines/s: statsd ÷ sidecar CPU per line = ${num(p.ratio, 2)}× (goal ≥ 3×: ${p.ratio >= 3 && p.sidecar.lost <= 0 && p.statsd.lost <= 0 ? 'meets' : 'MISSES'})`,
      );
    }
  }
  if (res.growth.length > 0) {
    out.push(`(i, growth) the sidecar's CPU per DogStatsD line by series count (${num(res.growth[0].rate)} lines/s offered, flush_ms 1000)`);
    const base = res.growth[0].usPerLine;
    out.push(
      table(
        ['series', 'lines counted', 'lost', 'refused', 'receiver cores', 'CPU µs/line', 'vs first row'],
        res.growth.map((r) => [
          num(r.series),
          num(r.linesReceived),
          num(r.lost),
          num(r.refused),
          num(r.receiverCores, 2),
          num(r.usPerLine, 2),
          `${num(r.usPerLine / base, 2)}×`,
        ]),
      ),
    );
  }
  return `${out.join('\n')}\n`;
}

module.exports = { run, report };

if (require.main === module) {
  run().then(
    (res) => {
      process.stdout.write(process.argv.includes('--json') ? `${JSON.stringify(res, null, 2)}\n` : report(res));
    },
    (err) => {
      process.stderr.write(`${err.stack}\n`);
      killAll();
      process.exit(1);
    },
  );
}
