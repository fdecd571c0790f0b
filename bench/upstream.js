'use strict';
/**
 * Upstream throughput: metric packs (numeric frames, ChaCha20-Poly1305) and
 * trace packs (text frames, tweetnacl secretbox) through an established
 * session, next to the raw ciphers on the same sizes measured in the same run.
 * Target (issue): upstream ≥ 60% of the raw cipher throughput for 64 KiB frames.
 * Also: handshake time (median, p99) and collector CPU per MB received.
 *
 *   node bench/upstream.js [--quick] [--duration MS] [--handshakes N] [--window N]
 *                          [--cpu-prof DIR] [--busy-retries N] [--collector-cli FILE]
 *
 *   --quick       shorter rounds and windows (smoke run, ~20 s)
 *   --duration    measured window per upstream phase (default 3000 ms, after 1000 ms warm-up)
 *   --handshakes  sequential handshakes per receiver (default 200)
 *   --window      unacked frames kept in flight (default 8)
 *   --cpu-prof    write the collector's and the sink's CPU profiles into DIR
 *                 (summarize with `node bench/tools/profile-summary.js FILE`)
 *   --busy-retries N  upstream phases measured again when other processes used
 *                 more than 0.25 cores meanwhile, at most N times per run (default 4)
 *   --collector-cli FILE  run another build of the collector's cli.js (A/B experiments;
 *                 its dependencies resolve from this repository's node_modules)
 *
 * What runs (all on loopback, one machine):
 *   raw cipher      nacl.secretbox and node:crypto chacha20-poly1305 on 64 KiB and
 *                   4 KiB buffers, in this process, MB/s (median of rounds)
 *   session crypto  proto's Sealer.numeric / Sealer.text and Opener.open on the
 *                   real ≈64 KiB bodies, in this process, no socket
 *   upstream        the sidecar's real UpstreamSession (sidecar/dist) over TCP,
 *                   window of WINDOW unacked frames, to
 *                     collector  a real `apm-collector run` process (log level info):
 *                                open, decode, SQLite store (WAL, synchronous=FULL,
 *                                one commit per frame; metric points go into their
 *                                interval rows and the minute rollups), then ack
 *                     sink       lib/upstream-sink.js, a separate process built from
 *                                the proto classes: real handshake, open (and, in
 *                                the "decode" rows, decode), ack; no storage
 *   handshake       N sequential sessions, TCP connect → active (ServerHello,
 *                   ClientFinished, AgentInfo, Config + License)
 *
 * MB = 10^6 bytes. Throughput counts body bytes (the plaintext the caller hands
 * to the session, as the raw cipher rows count plaintext); "wire" adds the 30
 * bytes of frame header, counter and tag per frame. CPU per MB divides a
 * process's CPU time (receiver: all its threads, /proc schedstat; sender: this
 * process, process.cpuUsage) by wire MB. The sender is this process: the real
 * UpstreamSession plus the bench's own bookkeeping (bodies are pre-built, so no
 * batching or encoding is in it). "Other load" is what the rest of the machine
 * used meanwhile; numbers from a busy machine are skewed, see --busy-retries.
 *
 * Prints a Markdown table, then one JSON line with every number. Targets are
 * reported, never asserted (exit 0 unless the bench could not run).
 */
const { execFileSync, spawn } = require('node:child_process');
const { createCipheriv, randomBytes } = require('node:crypto');
const { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } = require('node:fs');
const { cpus, loadavg, tmpdir } = require('node:os');
const { join, resolve } = require('node:path');
const { performance } = require('node:perf_hooks');
const nacl = require('tweetnacl');
const { cpuSeconds } = require('./lib/proc');
const { median, num, quantile, table } = require('./lib/stats');

const ROOT = resolve(__dirname, '..');
for (const f of ['proto/dist/upstream/index.js', 'sidecar/dist/upstream/session.js', 'collector/dist/cli.js']) {
  if (!existsSync(join(ROOT, f))) {
    process.stderr.write(`bench/upstream: build the product first (npx tsc -b): missing ${f}\n`);
    process.exit(1);
  }
}
const up = require(join(ROOT, 'proto/dist/upstream/index.js'));
const { UpstreamSession } = require(join(ROOT, 'sidecar/dist/upstream/session.js'));
const { metricBody, traceBodies } = require('./lib/upstream-inputs');

function arg(name, def) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : def;
}
const quick = process.argv.includes('--quick');
const MEASURE_MS = Number(arg('--duration', quick ? 1000 : 3000));
const WARM_MS = quick ? 300 : 1000;
const HANDSHAKES = Number(arg('--handshakes', quick ? 50 : 200));
const ROUNDS = quick ? 5 : 9;
const ROUND_MS = quick ? 60 : 150;
const CPU_PROF = arg('--cpu-prof', undefined);
const COLLECTOR_CLI = resolve(arg('--collector-cli', join(ROOT, 'collector/dist/cli.js')));
/** Unacked frames in flight (the sidecar allows 4 × net_send_max_bytes unacked; 8 × 64 KiB is well inside). */
const WINDOW = Number(arg('--window', 8));
const FRAME = 64 * 1024;
/** Body bytes so that plaintext (inner type byte + body) ≤ 64 KiB, the raw cipher size. */
const MAX_BODY = FRAME - 1;
const MB = 1e6;
const TARGET = 0.6;
/** Other processes' load (cores) above which an upstream phase is measured again, and how often per run. */
const BUSY_LIMIT = 0.25;
let busyRetriesLeft = Number(arg('--busy-retries', quick ? 0 : 4));

const step = (s) => process.stderr.write(`[upstream] ${s}\n`);

// ------------------------------------------------------------------ cleanup

const children = new Set();
let tmp = null;

function killAll(signal) {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) {
      try {
        c.kill(signal);
      } catch {
        // already gone
      }
    }
  }
}

/** SIGTERM every child (so --cpu-prof profiles get written), wait up to 5 s, then SIGKILL. */
async function stopChildren() {
  const waits = [...children].map(
    (c) =>
      new Promise((res) => {
        if (c.exitCode !== null || c.signalCode !== null) return res();
        c.once('exit', () => res());
      }),
  );
  killAll('SIGTERM');
  const t = setTimeout(() => killAll('SIGKILL'), 5000);
  await Promise.all(waits);
  clearTimeout(t);
  children.clear();
}

function removeTmp() {
  if (tmp !== null) {
    rmSync(tmp, { recursive: true, force: true });
    tmp = null;
  }
}

process.on('exit', () => {
  killAll('SIGKILL');
  removeTmp();
});
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    killAll('SIGKILL');
    removeTmp();
    process.exit(130);
  });
}

// ------------------------------------------------------------------ helpers

/**
 * CPU seconds of `pid`, all its threads, from the scheduler's nanosecond
 * counters (/proc/PID/task/TID/schedstat, first field) rather than utime + stime,
 * which this kernel samples per clock tick (CONFIG_TICK_CPU_ACCOUNTING, 10 ms).
 * Both are reported. Falls back to lib/proc's cpuSeconds without schedstat.
 */
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

/** Machine-wide CPU counters (Linux /proc/stat, all cores): total and idle jiffies. */
function machineCpu() {
  const f = readFileSync('/proc/stat', 'utf8').slice(0, 200).split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  return { total: f.reduce((a, b) => a + b, 0), idle: f[3] + f[4] };
}

/** Share of all cores busy between two machineCpu() readings (0..1). */
function busyShare(a, b) {
  const total = b.total - a.total;
  return total > 0 ? 1 - (b.idle - a.idle) / total : 0;
}

/**
 * Median MB/s of each `[fn, bytesPerCall]` over ROUNDS rounds of ROUND_MS. Rounds
 * are interleaved (a, b, c, a, b, c, …) so drift in machine load hits every
 * entry alike and the ratios between them stay fair.
 */
function rates(entries) {
  const names = Object.keys(entries);
  for (const n of names) {
    const [fn] = entries[n];
    const t0 = performance.now();
    while (performance.now() - t0 < ROUND_MS) fn(); // warm-up: JIT, allocations
  }
  const rounds = Object.fromEntries(names.map((n) => [n, []]));
  for (let r = 0; r < ROUNDS; r++) {
    for (const name of names) {
      const [fn, bytes] = entries[name];
      let n = 0;
      const t0 = performance.now();
      let t = t0;
      do {
        for (let k = 0; k < 4; k++) fn();
        n += 4;
        t = performance.now();
      } while (t - t0 < ROUND_MS);
      rounds[name].push((n * bytes) / ((t - t0) / 1000) / MB);
    }
  }
  return Object.fromEntries(names.map((n) => [n, median(rounds[n])]));
}

/** Spawn a node script; resolve with the child and the first stdout JSON line that `match` accepts. */
function startChild(script, args, env, match, what) {
  const nodeArgs = CPU_PROF !== undefined ? ['--cpu-prof', '--cpu-prof-dir', CPU_PROF] : [];
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
      let i = buf.indexOf('\n');
      while (i >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        i = buf.indexOf('\n');
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

/** One UpstreamSession (the sidecar's code) to 127.0.0.1:port; resolves when active. */
function openSession(port, key, agentId) {
  const h = { ack: () => {}, onClosed: null };
  return new Promise((res, rej) => {
    let settled = false;
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
          settled = true;
          res({ s, h, ms: performance.now() - t0 });
        },
        ack: (c) => h.ack(c),
        drain: () => {},
        closed: (cause) => {
          if (!settled) {
            settled = true;
            rej(new Error(`session ${agentId} closed before active: ${cause}`));
          } else if (h.onClosed !== null) h.onClosed(cause);
        },
      },
    );
  });
}

function closeSession(sess) {
  sess.h.onClosed = null;
  sess.s.close('bench done', null);
}

async function handshakes(port, key, agentId, n) {
  const ms = [];
  for (let i = 0; i < n; i++) {
    const sess = await openSession(port, key, agentId);
    ms.push(sess.ms);
    closeSession(sess);
  }
  return { n, medianMs: median(ms), p99Ms: quantile(ms, 0.99), maxMs: Math.max(...ms) };
}

/**
 * Keep WINDOW frames unacked on an active session for WARM_MS + MEASURE_MS;
 * count what is acked inside the measured window. `pid` is the receiver's.
 */
function drive(sess, kind, inputs, pid) {
  const { s, h } = sess;
  const inflight = [];
  let frameNo = 0;
  let measuring = false;
  let stopping = false;
  const m = { frames: 0, bodyBytes: 0, ackMs: [] };
  /** Everything sent in the phase (warm-up and drain included), to check what the receiver stored. */
  const sent = { frames: 0, items: 0 };
  const send = () => {
    let body;
    let c;
    frameNo++;
    if (kind === 'metric') {
      inputs.metric.patch(frameNo);
      body = inputs.metric.body;
      c = s.sendNumeric(up.Inner.MetricBatch, body);
      sent.items += inputs.metric.points;
    } else {
      const t = inputs.traces[frameNo % inputs.traces.length];
      body = t.body;
      c = s.sendText(up.Inner.TextBatch, body);
      sent.items += t.traces;
    }
    sent.frames++;
    inflight.push({ c, bytes: body.length, t: performance.now() });
  };
  return new Promise((res, rej) => {
    let t0 = 0;
    let cpu0 = 0;
    let own0 = null;
    let mach0 = null;
    let tick0 = 0;
    let result = null;
    const finish = () => {
      h.ack = () => {};
      h.onClosed = null;
      result.framesSent = sent.frames;
      result.itemsSent = sent.items;
      res(result);
    };
    h.onClosed = (cause) => rej(new Error(`session closed during the ${kind} phase: ${cause}`));
    h.ack = (counter) => {
      const now = performance.now();
      while (inflight.length > 0 && inflight[0].c <= counter) {
        const f = inflight.shift();
        if (measuring) {
          m.frames++;
          m.bodyBytes += f.bytes;
          m.ackMs.push(now - f.t);
        }
      }
      if (!stopping) while (inflight.length < WINDOW) send();
      else if (inflight.length === 0) finish();
    };
    while (inflight.length < WINDOW) send();
    setTimeout(() => {
      t0 = performance.now();
      cpu0 = taskCpuSeconds(pid);
      tick0 = cpuSeconds(pid);
      own0 = process.cpuUsage();
      mach0 = machineCpu();
      measuring = true;
      setTimeout(() => {
        const sec = (performance.now() - t0) / 1000;
        const cpu = taskCpuSeconds(pid) - cpu0;
        const tickCpu = cpuSeconds(pid) - tick0;
        const own = process.cpuUsage(own0);
        measuring = false;
        stopping = true;
        const wire = m.bodyBytes + m.frames * up.SEAL_OVERHEAD;
        result = {
          frames: m.frames,
          seconds: sec,
          framesPerSec: m.frames / sec,
          bodyMBps: m.bodyBytes / MB / sec,
          wireMBps: wire / MB / sec,
          meanBodyBytes: m.frames > 0 ? m.bodyBytes / m.frames : 0,
          ackMedianMs: median(m.ackMs),
          receiverCpuMsPerMB: (cpu * 1000) / (wire / MB),
          receiverCpuUtil: cpu / sec,
          /** The same from utime + stime (clock-tick sampled; for comparison only). */
          receiverTickCpuMsPerMB: (tickCpu * 1000) / (wire / MB),
          senderCpuMsPerMB: (own.user + own.system) / 1000 / (wire / MB),
          senderCpuUtil: (own.user + own.system) / 1e6 / sec,
          /** Busy share of the whole machine (all cores) meanwhile: sender + receiver + anything else running. */
          machineBusy: busyShare(mach0, machineCpu()),
        };
        /** Cores' worth of CPU used by anything but the sender and the receiver meanwhile (≈ 0 on a quiet machine). */
        result.otherLoadCores = Math.max(0, result.machineBusy * cpus().length - result.senderCpuUtil - result.receiverCpuUtil);
        if (inflight.length === 0) finish();
      }, MEASURE_MS);
    }, WARM_MS);
  });
}

/**
 * Both kinds against one receiver. On a shared machine a phase during which
 * other processes used more than BUSY_LIMIT cores is measured again (new session,
 * new agent id so nothing is a duplicate), within a run-wide budget of
 * --busy-retries; the attempt with the least other load is kept and the count of
 * attempts reported. `sent` accumulates what every attempt sent (for the check).
 */
async function upstreamPhases(port, key, pid, prefix, inputs, sent) {
  const out = {};
  for (const kind of ['metric', 'trace']) {
    let best = null;
    let attempts = 0;
    for (;;) {
      attempts++;
      const sess = await openSession(port, key, `${prefix}${kind}-${attempts}`);
      const r = await drive(sess, kind, inputs, pid);
      closeSession(sess);
      sent[kind] = (sent[kind] ?? 0) + r.itemsSent;
      if (best === null || r.otherLoadCores < best.otherLoadCores) best = r;
      if (r.otherLoadCores <= BUSY_LIMIT || busyRetriesLeft <= 0) break;
      busyRetriesLeft--;
      step(`  ${kind}: other processes used ${r.otherLoadCores.toFixed(2)} cores meanwhile; measuring again`);
    }
    best.attempts = attempts;
    out[kind] = best;
  }
  return out;
}

// ------------------------------------------------------------------ main

async function main() {
  const env = {
    date: new Date().toISOString(),
    node: process.version,
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    loadavgAtStart: loadavg().map((x) => Number(x.toFixed(2))),
  };
  step(`${env.date}  node ${env.node}  ${env.cores} × ${env.cpu}  load ${env.loadavgAtStart.join(' ')}`);
  if (env.loadavgAtStart[0] > 0.5) step(`note: load average ${env.loadavgAtStart[0]} at start; other work on this machine skews every number`);
  if (CPU_PROF !== undefined) mkdirSync(CPU_PROF, { recursive: true });

  const inputs = { metric: metricBody(MAX_BODY), traces: traceBodies(MAX_BODY, 8) };
  const traceMean = inputs.traces.reduce((a, b) => a + b.body.length, 0) / inputs.traces.length;
  const shape = {
    metricBodyBytes: inputs.metric.body.length,
    metricPacksPerFrame: inputs.metric.packs,
    metricPointsPerFrame: inputs.metric.points,
    histogramPointsPerFrame: inputs.metric.histograms,
    traceBodyBytes: Math.round(traceMean),
    tracesPerFrame: inputs.traces[0].traces,
    window: WINDOW,
  };
  step(
    `inputs: metric body ${shape.metricBodyBytes} B (${shape.metricPacksPerFrame} packs, ${shape.metricPointsPerFrame} points), trace body ≈${shape.traceBodyBytes} B (${shape.tracesPerFrame} traces)`,
  );

  // --- raw ciphers and the session's own Sealer / Opener, this process, no socket
  step('raw ciphers and session crypto (Sealer / Opener, no socket), interleaved rounds');
  const keys = { textKey: randomBytes(32), numericKey: randomBytes(32) };
  const sealer = new up.Sealer(nacl, keys, up.Direction.AgentToCollector);
  const mb = inputs.metric.body;
  const tb = inputs.traces[0].body;
  const sealed = (kind, n) => {
    const s = new up.Sealer(nacl, keys, up.Direction.AgentToCollector);
    return Array.from({ length: n }, () => (kind === 'metric' ? s.numeric(up.Inner.MetricBatch, mb) : s.text(up.Inner.TextBatch, tb)));
  };
  /** Open pre-sealed frames in order; a fresh Opener per pass (counters must rise). */
  const openAll = (frames) => {
    let i = 0;
    let o = new up.Opener(nacl, keys, up.Direction.AgentToCollector);
    return () => {
      if (i === frames.length) {
        i = 0;
        o = new up.Opener(nacl, keys, up.Direction.AgentToCollector);
      }
      const f = frames[i++];
      o.open(f[4], f.subarray(5));
    };
  };
  // Two families, each interleaved within itself: tweetnacl allocates three 64 KiB
  // arrays per call, and the GC it causes would otherwise land in whichever
  // ChaCha20 round comes next (seen as ±30% swings of the raw ChaCha20 figure).
  const chachaEntries = {};
  const boxEntries = {};
  for (const size of [FRAME, 4096]) {
    const msg = randomBytes(size);
    const kBox = new Uint8Array(randomBytes(32));
    const n24 = new Uint8Array(24);
    const kChacha = randomBytes(32);
    const n12 = Buffer.alloc(12);
    boxEntries[`secretbox${size}`] = [() => nacl.secretbox(msg, n24, kBox), size];
    chachaEntries[`chacha${size}`] = [
      () => {
        const c = createCipheriv('chacha20-poly1305', kChacha, n12, { authTagLength: 16 });
        c.update(msg);
        c.final();
        c.getAuthTag();
      },
      size,
    ];
  }
  const mach0 = machineCpu();
  const r = {
    ...rates({
      ...chachaEntries,
      sealNumeric: [() => sealer.numeric(up.Inner.MetricBatch, mb), mb.length],
      openNumeric: [openAll(sealed('metric', 64)), mb.length],
    }),
    ...rates({
      ...boxEntries,
      sealText: [() => sealer.text(up.Inner.TextBatch, tb), tb.length],
      openText: [openAll(sealed('trace', 16)), tb.length],
    }),
  };
  const raw = {};
  for (const size of [FRAME, 4096]) raw[size] = { secretbox: r[`secretbox${size}`], chacha: r[`chacha${size}`] };
  const session = { sealNumeric: r.sealNumeric, openNumeric: r.openNumeric, sealText: r.sealText, openText: r.openText };
  // One core runs these; more than 1 / cores busy means something else shared the machine.
  const cipherMachineBusy = busyShare(mach0, machineCpu());
  const cipherOtherLoadCores = Math.max(0, cipherMachineBusy * cpus().length - 1);

  // --- real collector
  tmp = mkdtempSync(join(tmpdir(), 'apm-bench-upstream-'));
  const dataDir = join(tmp, 'collector');
  const cli = COLLECTOR_CLI;
  const childEnv = { NODE_PATH: join(ROOT, 'node_modules') };
  const keyOut = execFileSync(process.execPath, [cli, 'keys', 'create', '--project', 'bench', '--data-dir', dataDir], {
    encoding: 'utf8',
    env: { ...process.env, ...childEnv },
  });
  const keyText = keyOut.trim().split('\n').pop();
  const key = up.parseAccessKey(keyText);
  step('starting the collector');
  const col = await startChild(
    cli,
    ['run', '--host', '127.0.0.1', '--port', '0', '--http', '127.0.0.1:0', '--data-dir', dataDir, '--log-level', 'info'],
    childEnv,
    (o) => (o.msg === 'listening' ? { agents: o.agents.port, http: o.http.port } : undefined),
    'collector',
  );
  if (cli !== join(ROOT, 'collector/dist/cli.js')) step(`collector build under test: ${cli}`);
  step(`collector pid ${col.child.pid}, agents :${col.value.agents}, http :${col.value.http}; data dir ${dataDir}`);
  step(`handshakes × ${HANDSHAKES} → collector`);
  const hsCollector = await handshakes(col.value.agents, key, 'bench-handshake', HANDSHAKES);
  step(`upstream → collector (${WARM_MS} ms warm-up + ${MEASURE_MS} ms per kind)`);
  const collectorSent = {};
  const viaCollector = await upstreamPhases(col.value.agents, key, col.child.pid, 'bench-', inputs, collectorSent);
  const stats = await (await fetch(`http://127.0.0.1:${col.value.http}/api/stats`)).json();

  // --- sink (no storage)
  step('starting the sink (proto classes, no storage)');
  const sink = await startChild(join(__dirname, 'lib/upstream-sink.js'), [], { APM_BENCH_KEY: keyText }, (o) => o.port, 'sink');
  step(`handshakes × ${HANDSHAKES} → sink`);
  const hsSink = await handshakes(sink.value, key, 'open:handshake', HANDSHAKES);
  step('upstream → sink, open + ack');
  const viaSinkOpen = await upstreamPhases(sink.value, key, sink.child.pid, 'open:', inputs, {});
  step('upstream → sink, open + decode + ack');
  const viaSinkDecode = await upstreamPhases(sink.value, key, sink.child.pid, 'decode:', inputs, {});

  await stopChildren();
  removeTmp();
  env.loadavgAtEnd = loadavg().map((x) => Number(x.toFixed(2)));

  // --- report
  const chacha = raw[FRAME].chacha;
  const box = raw[FRAME].secretbox;
  const ratio = (r) => ({ metric: r.metric.bodyMBps / chacha, trace: r.trace.bodyMBps / box });
  const ratios = {
    collector: ratio(viaCollector),
    sinkOpen: ratio(viaSinkOpen),
    sinkDecode: ratio(viaSinkDecode),
    sealOnly: { metric: session.sealNumeric / chacha, trace: session.sealText / box },
  };
  const pct = (x) => `${(100 * x).toFixed(1)}%`;
  const mark = (x) => `${pct(x)} ${x >= TARGET ? '✓' : '✗'}`;
  const rows = [];
  for (const size of [FRAME, 4096]) {
    const label = size === FRAME ? '64 KiB' : '4 KiB';
    rows.push([`raw ChaCha20-Poly1305 (node:crypto), ${label}`, num(raw[size].chacha, 1), '', '', '', '', num(cipherOtherLoadCores, 2)]);
    rows.push([`raw secretbox (tweetnacl), ${label}`, num(raw[size].secretbox, 1), '', '', '', '', num(cipherOtherLoadCores, 2)]);
  }
  rows.push(['Sealer.numeric, metric body, no socket', num(session.sealNumeric, 1), '', pct(ratios.sealOnly.metric), '', '', num(cipherOtherLoadCores, 2)]);
  rows.push([
    'Opener.open numeric, metric body, no socket',
    num(session.openNumeric, 1),
    '',
    pct(session.openNumeric / chacha),
    '',
    '',
    num(cipherOtherLoadCores, 2),
  ]);
  rows.push(['Sealer.text, trace body, no socket', num(session.sealText, 1), '', pct(ratios.sealOnly.trace), '', '', num(cipherOtherLoadCores, 2)]);
  rows.push(['Opener.open text, trace body, no socket', num(session.openText, 1), '', pct(session.openText / box), '', '', num(cipherOtherLoadCores, 2)]);
  const upRows = [
    ['collector (open, decode, SQLite FULL, ack)', viaCollector, ratios.collector],
    ['sink: open + decode + ack, no storage', viaSinkDecode, ratios.sinkDecode],
    ['sink: open + ack, no storage', viaSinkOpen, ratios.sinkOpen],
  ];
  for (const [label, r, q] of upRows) {
    for (const [kind, what] of [
      ['metric', 'metrics'],
      ['trace', 'traces'],
    ]) {
      const x = r[kind];
      rows.push([
        `upstream ${what} → ${label}`,
        num(x.bodyMBps, 1),
        num(x.framesPerSec, 0),
        mark(q[kind]),
        num(x.receiverCpuMsPerMB, 2),
        num(x.senderCpuMsPerMB, 2),
        num(x.otherLoadCores, 2),
      ]);
    }
  }
  const header = [
    'path (64 KiB frames unless stated)',
    'MB/s',
    'frames/s',
    'of raw cipher (target ≥ 60%)',
    'receiver CPU ms/MB',
    'sender CPU ms/MB',
    'other load (cores)',
  ];
  const hsRows = [
    ['collector (real, SQLite)', hsCollector],
    ['sink (no storage)', hsSink],
  ].map(([l, h]) => [l, String(h.n), num(h.medianMs, 2), num(h.p99Ms, 2), num(h.maxMs, 2)]);

  process.stdout.write(
    `\nupstream, ${env.date.slice(0, 10)}, node ${env.node}, ${env.cores} × ${env.cpu}; window ${WINDOW} frames; ${MEASURE_MS} ms measured after ${WARM_MS} ms warm-up\n` +
      `metric frame: ${shape.metricBodyBytes} B body = ${shape.metricPacksPerFrame} packs, ${shape.metricPointsPerFrame} points (${shape.histogramPointsPerFrame} histograms); ` +
      `trace frame: ≈${shape.traceBodyBytes} B body = ${shape.tracesPerFrame} traces × 6 steps\n` +
      'ratios: metrics ÷ raw ChaCha20-Poly1305 64 KiB; traces ÷ raw secretbox 64 KiB. MB = 10^6 bytes of body (plaintext).\n' +
      `other load: cores' worth of CPU used during the row by processes other than this bench's (from /proc/stat; ≈ 0 on a quiet machine, higher = skewed).\n\n` +
      `${table(header, rows)}\n\n${table(['handshake (TCP connect → active)', 'n', 'median ms', 'p99 ms', 'max ms'], hsRows)}\n\n`,
  );
  const collectorReceived = {
    metricPointsSent: collectorSent.metric,
    metricPointsStored: stats.received?.metricPoints,
    droppedLate: stats.droppedLate,
    duplicatePacks: stats.duplicatePacks,
    tracesSent: collectorSent.trace,
    tracesStored: stats.received?.traces,
    rejected: stats.rejected,
  };
  const cr = collectorReceived;
  const storedAll = cr.metricPointsStored === cr.metricPointsSent && cr.tracesStored === cr.tracesSent;
  process.stdout.write(
    `collector check: stored ${cr.metricPointsStored} of ${cr.metricPointsSent} metric points sent (late ${cr.droppedLate}, duplicate packs ${cr.duplicatePacks}), ` +
      `${cr.tracesStored} of ${cr.tracesSent} traces${storedAll ? '' : '  ← MISMATCH: the collector did not store everything; its numbers do not measure storage'}\n\n`,
  );
  process.stdout.write(
    `${JSON.stringify({
      bench: 'upstream',
      env,
      shape,
      raw: { '64KiB': raw[FRAME], '4KiB': raw[4096] },
      session,
      cipherMachineBusy,
      cipherOtherLoadCores,
      upstream: { collector: viaCollector, sinkDecode: viaSinkDecode, sinkOpen: viaSinkOpen },
      ratios,
      target: TARGET,
      handshake: { collector: hsCollector, sink: hsSink },
      collectorReceived,
    })}\n`,
  );
}

main().then(
  () => process.exit(0),
  async (err) => {
    process.stderr.write(`bench/upstream: ${err.stack ?? err}\n`);
    await stopChildren().catch(() => {});
    removeTmp();
    process.exit(1);
  },
);
