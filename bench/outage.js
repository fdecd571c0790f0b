'use strict';
/**
 * (e) Outage: sidecar memory through a collector outage, and the time to replay the
 * retained metrics when the collector comes back. Targets (issue): sidecar RSS
 * ≤ 100 MiB and flat once the retention window is full; report the time to replay
 * 3 minutes of retained metrics.
 *
 *   node bench/outage.js [--quick] [--scale K] [--outage-s S] [--full] [--series N] [--tmp DIR] [--json FILE]
 *                        [--cpu-prof DIR] [--heap-snap DIR]
 *
 *   --scale K     divide every time-based sidecar setting by K (default 10, 1..10)
 *   --outage-s S  outage length in wall seconds (default 600 / K: the scaled 10 minutes;
 *                 --quick: 30 at K = 10, still past the 18 s window)
 *   --full        K = 1 (the real settings: retention_ms 180000, metric_interval_ms
 *                 10000), outage default 200 s: a full 3-minute window is retained,
 *                 then replayed. About 4 minutes of wall time
 *   --series N    series per shim (default 100, the issue's figure; more shows how memory
 *                 grows with the series retained)
 *   --sidecar-cli FILE  run another build of the sidecar's cli.js (A/B experiments; it
 *                 must resolve its dependencies, e.g. a copy of sidecar/dist next to a
 *                 node_modules link to this repository's)
 *   --cpu-prof    the sidecar runs with --cpu-prof; its profile lands in DIR on exit
 *   --heap-snap   the sidecar runs with --heapsnapshot-signal=SIGUSR2 in DIR; one
 *                 snapshot when the window is full and one at the end of the outage
 *                 (each snapshot briefly inflates RSS: use for diagnosis, not numbers)
 *
 * What runs (all real processes, loopback TCP and a Unix socket, temp dirs):
 *
 *   collector  `apm-collector run --port 0 --host 127.0.0.1 --http 127.0.0.1:0` on a
 *              fresh data dir, with a fresh key (`apm-collector keys create`)
 *   sidecar    `apm-sidecar run --transport tcp` with that key, its own data dir
 *              (SQLite retention, synchronous=NORMAL), the scaled settings below
 *   4 shims    outage-child.js: the real shim, 100 series each (60 histograms, 40
 *              counters), every series recording 100 values per second, flushMs 1000
 *
 * Scaling. The shims' data rate is never scaled: 4 processes × 100 series × one flush
 * per second, as in production. Every sidecar duration is divided by K:
 *
 *   retention_ms 180000/K   metric_interval_ms 10000/K   standby_after_ms 60000/K
 *   reconnect_schedule 7x(60000/K),(300000/K)   (the appdynamics profile, scaled)
 *
 * The sidecar's memory while disconnected is driven by what it holds: the retained
 * intervals (retention_ms / metric_interval_ms = 18 at any K) × the series (400)
 * as packs in queue1 (decoded points with their sketches and the encoded body) and
 * in SQLite, plus one or two open intervals in the aggregator. Scaling retention and
 * interval together keeps all of that identical, and the states pass in the same
 * order (standby after 1/10 of the real minute, muted after 3 scaled attempts).
 * What changes is that intervals close K times as often, so any memory that grows
 * per closed interval grows K times faster per wall-clock minute here: the slope
 * measured is an upper bound for the real one. The replay backlog is the same too:
 * 18 intervals × 400 points, whatever K. The level is not exactly the same: on the
 * machine of bench/README.md, 10 real minutes (--full --outage-s 600) ended at
 * 82.7 MiB where the scaled runs ended at 78.8–79.5 MiB (see the README).
 *
 * Timeline: connected warm-up (collector up), then SIGKILL of the collector, the
 * outage (RSS from /proc/<pid>/status VmRSS and an in-process status request — the
 * same request `apm-sidecar status --json` makes — every second), then the collector
 * restarted on the same port and data dir, `apm-sidecar reconnect` (what SIGHUP does;
 * without it the next attempt waits for the schedule), and the replay: from the
 * collector listening again until the sidecar's retention holds no packs, the
 * upstream has no unacked frame and queue1 is empty (polled every 50 ms). Then a few
 * connected seconds more.
 */
const { execFile, spawn } = require('node:child_process');
const { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } = require('node:fs');
const { request } = require('node:http');
const { tmpdir } = require('node:os');
const { join, resolve } = require('node:path');
const { createInterface } = require('node:readline');
const { cpuSeconds } = require('./lib/proc');
const { median, num, table } = require('./lib/stats');

const ROOT = resolve(__dirname, '..');
const SIDECAR_CLI = join(ROOT, 'sidecar/dist/cli.js');
const COLLECTOR_CLI = join(ROOT, 'collector/dist/cli.js');
const { requestControl, requestStatus } = require(join(ROOT, 'sidecar/dist/status-client.js'));

const SHIMS = 4;
const SERIES_DEFAULT = 100;
const FLUSH_MS = 1000;
const MiB = 1024 * 1024;

function argv(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// --- processes ------------------------------------------------------------------

/** Every process this bench starts, and its temporary directories: killed and removed on any exit path. */
const live = new Set();
const tempDirs = new Set();
function killAll() {
  for (const p of live) {
    try {
      p.cp.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
}
function cleanupSync() {
  killAll();
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
  tempDirs.clear();
}
process.once('exit', cleanupSync);
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.once(sig, () => {
    cleanupSync();
    process.exit(130);
  });
}

/** A child process whose output lines are kept (JSON parsed when they are JSON). */
function start(name, args, opts = {}) {
  const cp = spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'pipe'], ...opts });
  const p = { name, cp, pid: cp.pid, lines: [], tail: [], exited: null };
  live.add(p);
  p.exited = new Promise((res) => {
    cp.once('exit', (code, signal) => {
      live.delete(p);
      p.exit = { code, signal };
      res(p.exit);
    });
  });
  const keep = (line) => {
    p.tail.push(line.slice(0, 500));
    if (p.tail.length > 40) p.tail.shift();
    if (line.startsWith('{')) {
      try {
        const j = JSON.parse(line);
        p.lines.push(j);
        if (p.lines.length > 2000) p.lines.splice(0, 1000);
      } catch {
        // not JSON
      }
    }
  };
  createInterface({ input: cp.stdout }).on('line', keep);
  createInterface({ input: cp.stderr }).on('line', keep);
  return p;
}

async function waitFor(what, fn, timeoutMs, p = null, everyMs = 50) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (p?.exit) throw new Error(`${p.name} exited (${JSON.stringify(p.exit)}) while waiting for ${what}:\n${p.tail.join('\n')}`);
    let v;
    try {
      v = await fn();
    } catch (err) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}: ${err.message}`);
    }
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}${p ? `:\n${p.tail.join('\n')}` : ''}`);
    await sleep(everyMs);
  }
}

async function stop(p, signal = 'SIGTERM', ms = 8000) {
  if (p.exit) return;
  p.cp.kill(signal);
  const t = setTimeout(() => p.cp.kill('SIGKILL'), ms);
  await p.exited;
  clearTimeout(t);
}

function execNode(args, timeoutMs = 15_000) {
  return new Promise((res, rej) => {
    execFile(process.execPath, args, { timeout: timeoutMs, maxBuffer: 16 * MiB }, (err, stdout, stderr) => {
      if (err) rej(new Error(`${args.slice(0, 3).join(' ')}: ${err.message} ${stderr}`));
      else res(stdout);
    });
  });
}

function getJson(port, path) {
  return new Promise((res, rej) => {
    const req = request({ host: '127.0.0.1', port, path, timeout: 5000 }, (r) => {
      let body = '';
      r.on('data', (d) => {
        body += d;
      });
      r.on('end', () => {
        try {
          res(JSON.parse(body));
        } catch (err) {
          rej(err);
        }
      });
    });
    req.on('error', rej);
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.end();
  });
}

async function startCollector(dataDir, port) {
  const p = start('collector', [COLLECTOR_CLI, 'run', '--port', String(port), '--host', '127.0.0.1', '--http', '127.0.0.1:0', '--data-dir', dataDir]);
  const line = await waitFor('the collector to listen', () => p.lines.find((l) => l.msg === 'listening'), 15_000, p);
  p.port = line.agents.port;
  p.httpPort = line.http.port;
  return p;
}

/** VmRSS and VmHWM of a process, in bytes. */
function memOf(pid) {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? Number.NaN) * 1024;
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

/** Least-squares slope of y over x. */
function slope(xs, ys) {
  const n = xs.length;
  if (n < 2) return Number.NaN;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let sxy = 0;
  let sxx = 0;
  for (let i = 0; i < n; i++) {
    sxy += (xs[i] - mx) * (ys[i] - my);
    sxx += (xs[i] - mx) ** 2;
  }
  return sxy / sxx;
}

// --- the bench ----------------------------------------------------------------

async function run({
  full = process.argv.includes('--full'),
  quick = process.argv.includes('--quick'),
  scale = full ? 1 : Number(argv('--scale', 10)),
  outageS = argv('--outage-s', undefined),
  series = Number(argv('--series', SERIES_DEFAULT)),
  sidecarCli = resolve(argv('--sidecar-cli', SIDECAR_CLI)),
  tmp = argv('--tmp', tmpdir()),
  cpuProfDir = argv('--cpu-prof', undefined),
  heapSnapDir = argv('--heap-snap', undefined),
  log = (s) => process.stderr.write(`[outage] ${s}\n`),
} = {}) {
  if (!(Number.isInteger(series) && series >= 1 && series <= 5000)) throw new Error('--series: series per shim, 1..5000');
  if (!(Number.isInteger(scale) && scale >= 1 && scale <= 10)) throw new Error('--scale: an integer 1..10 (metric_interval_ms must stay ≥ flush_ms = 1000)');
  const cfg = {
    scale,
    retentionMs: 180_000 / scale,
    intervalMs: 10_000 / scale,
    standbyAfterMs: 60_000 / scale,
    schedule: `7x${60_000 / scale},${300_000 / scale}`,
  };
  const outageMs =
    outageS !== undefined
      ? Number(outageS) * 1000
      : full
        ? cfg.retentionMs + 2 * cfg.intervalMs
        : quick
          ? Math.max(30_000, cfg.retentionMs + 12 * cfg.intervalMs)
          : 600_000 / scale;
  if (!(outageMs >= 1000 && outageMs <= 3_600_000)) throw new Error('--outage-s: 1..3600');
  const warmupMs = Math.max(quick ? 6000 : 10_000, 3 * cfg.intervalMs);
  const afterMs = quick ? 3000 : 5000;

  const base = mkdtempSync(join(tmp, 'apm-bo-'));
  tempDirs.add(base);
  const socket = join(base, 'apm.sock');
  const samples = [];
  let phase = 'connected';
  let sampling = true;
  let sampler = null;
  const procs = [];
  let sidecar = null;
  let collector = null;
  try {
    // Fresh key, collector, sidecar.
    const cdir = join(base, 'collector');
    const keyOut = await execNode([COLLECTOR_CLI, 'keys', 'create', '--project', 'bench', '--data-dir', cdir]);
    const key = keyOut.trim().split('\n').pop().trim();
    const keyFile = join(base, 'access.key');
    writeFileSync(keyFile, `${key}\n`, { mode: 0o600 });
    collector = await startCollector(cdir, 0);
    const port = collector.port;
    log(
      `collector on 127.0.0.1:${port} (pid ${collector.pid}); K = ${scale}: retention_ms ${cfg.retentionMs}, metric_interval_ms ${cfg.intervalMs}; outage ${outageMs / 1000} s`,
    );

    const nodeArgs = [];
    if (cpuProfDir !== undefined) {
      mkdirSync(cpuProfDir, { recursive: true });
      nodeArgs.push('--cpu-prof', '--cpu-prof-dir', resolve(cpuProfDir));
    }
    if (heapSnapDir !== undefined) {
      mkdirSync(heapSnapDir, { recursive: true });
      nodeArgs.push('--heapsnapshot-signal=SIGUSR2');
    }
    const set = (k, v) => ['--set', `${k}=${v}`];
    sidecar = start(
      'sidecar',
      [
        ...nodeArgs,
        sidecarCli,
        'run',
        '--transport',
        'tcp',
        '--server-host',
        '127.0.0.1',
        '--server-port',
        String(port),
        '--access-key-file',
        keyFile,
        '--socket',
        socket,
        '--data-dir',
        join(base, 'sidecar'),
        ...set('agent_id', 'bench-outage'),
        ...set('log_level', 'info'),
        ...set('flush_ms', FLUSH_MS),
        ...set('retention_ms', cfg.retentionMs),
        ...set('metric_interval_ms', cfg.intervalMs),
        ...set('standby_after_ms', cfg.standbyAfterMs),
        ...set('reconnect_schedule', cfg.schedule),
      ],
      heapSnapDir !== undefined ? { cwd: resolve(heapSnapDir) } : {},
    );
    await waitFor('the sidecar to answer status', () => requestStatus(socket, 1000), 15_000, sidecar);
    await waitFor('the sidecar to be active', async () => (await requestStatus(socket, 1000)).state === 'active', 15_000, sidecar);

    for (let i = 0; i < SHIMS; i++) procs.push(start(`shim ${i}`, [join(__dirname, 'outage-child.js'), socket, String(i), String(series), String(FLUSH_MS)]));
    for (const p of procs) await waitFor(`${p.name} to connect`, () => p.lines.some((l) => l.ready), 15_000, p);
    const t00 = Date.now();
    log(`4 shims connected; connected warm-up ${warmupMs / 1000} s`);

    // One sample a second for the whole run.
    const sample = async () => {
      const t = Date.now();
      const mem = memOf(sidecar.pid);
      let s = null;
      try {
        s = await requestStatus(socket, 2000);
      } catch {
        // counted as a missing sample
      }
      samples.push({
        t,
        phase,
        rss: mem.rss,
        hwm: mem.hwm,
        cpu: cpuSeconds(sidecar.pid),
        state: s?.state,
        packs: s?.retention.packs,
        frames: s?.retention.frames,
        rows: s?.retention.rows,
        oldestAgeMs: s?.retention.oldestAgeMs,
        queue1: s?.queues.queue1.depth,
        aggPoints: s?.aggregation.points,
        received: s?.counters.received.metrics,
        sent: s?.counters.sent.metrics,
        expired: s?.counters.dropped.retention_expired ?? 0,
        dropped: s ? { ...s.counters.dropped } : null,
        inFlight: s?.upstream.inFlightFrames,
      });
    };
    sampler = (async () => {
      while (sampling) {
        const next = Date.now() + 1000;
        await sample();
        await sleep(Math.max(0, next - Date.now()));
      }
    })();

    await sleep(warmupMs);
    const pre = await requestStatus(socket, 2000);
    if (pre.state !== 'active' || !(pre.counters.sent.metrics > 0))
      throw new Error(`not sending before the outage: state ${pre.state}, sent ${pre.counters.sent.metrics}`);

    // The outage.
    phase = 'outage';
    const t0 = Date.now();
    collector.cp.kill('SIGKILL');
    await collector.exited;
    log(`collector killed (SIGKILL) after ${((t0 - t00) / 1000).toFixed(1)} s connected; outage of ${outageMs / 1000} s`);
    let snapped = false;
    const heapSnap = async (label) => {
      if (heapSnapDir === undefined) return;
      sidecar.cp.kill('SIGUSR2');
      log(`heap snapshot (${label}) requested in ${heapSnapDir}`);
      await sleep(3000);
    };
    while (Date.now() - t0 < outageMs) {
      await sleep(Math.min(1000, outageMs - (Date.now() - t0)));
      const last = samples[samples.length - 1];
      if (!snapped && last?.phase === 'outage' && last.expired > (pre.counters.dropped.retention_expired ?? 0)) {
        snapped = true;
        await heapSnap('window full');
      }
      if (Math.floor((Date.now() - t0) / 10_000) !== Math.floor((Date.now() - t0 - 1000) / 10_000)) {
        log(
          `  ${Math.round((Date.now() - t0) / 1000)} s: RSS ${num(last.rss / MiB, 1)} MiB, state ${last.state}, packs ${last.packs}, oldest ${last.oldestAgeMs} ms`,
        );
      }
    }
    await heapSnap('end of outage');
    const cliStatus = JSON.parse(await execNode([SIDECAR_CLI, 'status', '--json', '--socket', socket]));
    const tEnd = Date.now();

    // The collector returns: same port, same data dir.
    phase = 'replay';
    collector = await startCollector(cdir, port);
    const tBack = Date.now();
    const atBack = await requestStatus(socket, 2000);
    const scheduleWaitMs = atBack.upstream.nextAttemptAt === null ? null : Date.parse(atBack.upstream.nextAttemptAt) - tBack;
    const reconnect = await requestControl(socket, 'reconnect');
    let tActive = null;
    let atDone = null;
    const deadline = tBack + Math.max(120_000, outageMs);
    for (;;) {
      const s = await requestStatus(socket, 2000);
      const now = Date.now();
      if (tActive === null && s.state === 'active') tActive = now;
      if (tActive !== null && s.retention.packs === 0 && s.upstream.inFlightFrames === 0 && s.queues.queue1.depth === 0) {
        atDone = { t: now, s };
        break;
      }
      if (now > deadline)
        throw new Error(
          `replay did not finish within ${(deadline - tBack) / 1000} s: state ${s.state}, packs ${s.retention.packs}, inFlight ${s.upstream.inFlightFrames}`,
        );
      await sleep(50);
    }
    log(`replayed ${atBack.retention.packs} packs in ${atDone.t - tBack} ms after the collector listened again (active after ${tActive - tBack} ms)`);
    phase = 'after';
    await sleep(afterMs);
    sampling = false;
    await sampler;
    const collectorStats = await getJson(collector.httpPort, '/api/stats').catch((err) => ({ error: err.message }));
    const shimStats = procs.map((p) => p.exit ?? null);

    // --- analysis -------------------------------------------------------------
    const connected = samples.filter((x) => x.phase === 'connected');
    const outage = samples.filter((x) => x.phase === 'outage');
    const after = samples.filter((x) => x.phase === 'after');
    const expired0 = connected.length ? connected[connected.length - 1].expired : 0;
    const fill = outage.find((x) => x.expired > expired0) ?? null;
    const lastHalf = outage.filter((x) => x.t - t0 >= outageMs / 2);
    const sinceFill = fill === null ? [] : outage.filter((x) => x.t >= fill.t);
    const flat = (xs) => {
      if (xs.length < 2) return null;
      const rs = xs.map((x) => x.rss / MiB);
      return {
        from: (xs[0].t - t0) / 1000,
        to: (xs[xs.length - 1].t - t0) / 1000,
        slopeMiBPerMin: slope(
          xs.map((x) => (x.t - t0) / 60_000),
          rs,
        ),
        minMiB: Math.min(...rs),
        maxMiB: Math.max(...rs),
        spreadMiB: Math.max(...rs) - Math.min(...rs),
      };
    };
    const end = outage[outage.length - 1];
    const rep = atDone.s;
    // "Flat once full" is judged on the last half when the window was full by then, else on what
    // follows the fill, and then only when that is at least a minute long (an outage that ends soon
    // after the fill shows the heap still settling, not a trend).
    const halfFull = fill !== null && fill.t - t0 <= outageMs / 2;
    const flatWin = halfFull ? flat(lastHalf) : flat(sinceFill);
    const res = {
      config: { ...cfg, outageMs, warmupMs, shims: SHIMS, seriesPerShim: series, flushMs: FLUSH_MS, synchronous: 'NORMAL' },
      equivalentOutageMin: (outageMs * scale) / 60_000,
      rss: {
        startMiB: median(connected.slice(-3).map((x) => x.rss)) / MiB,
        atFillMiB: fill === null ? null : fill.rss / MiB,
        fillAfterS: fill === null ? null : (fill.t - t0) / 1000,
        endMiB: end.rss / MiB,
        maxOutageMiB: Math.max(...outage.map((x) => x.rss)) / MiB,
        peakHwmMiB: Math.max(...samples.map((x) => x.hwm)) / MiB,
        afterReplayMiB: after.length ? after[after.length - 1].rss / MiB : null,
        lastHalf: flat(lastHalf),
        sinceFill: flat(sinceFill),
        flatBasis: halfFull ? 'last half' : 'since the window filled',
        flat: flatWin,
        flatJudged: flatWin !== null && (halfFull || flatWin.to - flatWin.from >= 60),
      },
      retainedAtEnd: {
        state: end.state,
        packs: end.packs,
        frames: end.frames,
        rows: end.rows,
        oldestAgeMs: end.oldestAgeMs,
        queue1: end.queue1,
        expiredPoints: end.expired - expired0,
        cli: { state: cliStatus.state, retention: cliStatus.retention, queue1: cliStatus.queues.queue1, dropped: cliStatus.counters.dropped },
      },
      sidecarCpuOutage: (end.cpu - outage[0].cpu) / ((end.t - outage[0].t) / 1000),
      replay: {
        backlogPacks: atBack.retention.packs,
        backlogRows: atBack.retention.rows,
        backlogOldestAgeMs: atBack.retention.oldestAgeMs,
        pointsSent: rep.counters.sent.metrics - atBack.counters.sent.metrics,
        bytesSent: rep.upstream.bytesSent - (atBack.upstream.bytesSent ?? 0),
        reconnect: reconnect.message,
        scheduleWaitMs,
        collectorDownMs: tBack - tEnd,
        activeAfterMs: tActive - tBack,
        doneAfterMs: atDone.t - tBack,
        replayMs: atDone.t - tActive,
        collector: collectorStats.error
          ? collectorStats
          : { received: collectorStats.received, droppedLate: collectorStats.droppedLate, duplicatePacks: collectorStats.duplicatePacks },
      },
      shimExits: shimStats,
      samples: samples.map((x) => ({
        s: Number(((x.t - t0) / 1000).toFixed(1)),
        phase: x.phase,
        rssMiB: Number((x.rss / MiB).toFixed(2)),
        state: x.state,
        packs: x.packs,
        rows: x.rows,
        oldestAgeMs: x.oldestAgeMs,
        queue1: x.queue1,
      })),
    };
    return res;
  } finally {
    sampling = false;
    if (sampler !== null) await sampler.catch(() => undefined);
    await Promise.all(procs.map((p) => stop(p)));
    if (sidecar !== null) await stop(sidecar, 'SIGTERM', 10_000);
    if (collector !== null) await stop(collector);
    killAll();
    rmSync(base, { recursive: true, force: true });
    tempDirs.delete(base);
  }
}

function report(res) {
  const r = res.rss;
  const c = res.config;
  const p = res.replay;
  const f = (v, d = 1) => (v === null || v === undefined ? '—' : num(v, d));
  const lines = [
    `outage: ${c.shims} shims × ${c.seriesPerShim} series, 1 flush/s (real rate); sidecar settings ÷ ${c.scale}: retention_ms ${c.retentionMs}, metric_interval_ms ${c.intervalMs}, standby_after_ms ${c.standbyAfterMs}, reconnect_schedule ${c.schedule}; outage ${c.outageMs / 1000} s wall = ${num(res.equivalentOutageMin, 1)} min at real settings`,
    table(
      ['sidecar RSS', 'MiB'],
      [
        ['connected, before the outage', f(r.startMiB)],
        [`when the window filled (${f(r.fillAfterS, 0)} s into the outage)`, f(r.atFillMiB)],
        ['end of the outage', f(r.endMiB)],
        ['max during the outage', f(r.maxOutageMiB)],
        ['peak (VmHWM, whole run)', f(r.peakHwmMiB)],
        ['after the replay', f(r.afterReplayMiB)],
        [
          `last half of the outage (${f(r.lastHalf?.from, 0)}–${f(r.lastHalf?.to, 0)} s): slope MiB/min, max − min`,
          `${f(r.lastHalf?.slopeMiBPerMin, 2)}, ${f(r.lastHalf?.spreadMiB)}`,
        ],
        [`since the window filled: slope MiB/min, max − min`, `${f(r.sinceFill?.slopeMiBPerMin, 2)}, ${f(r.sinceFill?.spreadMiB)}`],
      ],
    ),
    `retained at the end: state ${res.retainedAtEnd.state}, ${res.retainedAtEnd.packs} packs + ${res.retainedAtEnd.frames} frames (oldest ${num(res.retainedAtEnd.oldestAgeMs / 1000, 1)} s), queue1 ${res.retainedAtEnd.queue1}; ${num(res.retainedAtEnd.expiredPoints)} points expired past retention_ms; sidecar CPU during the outage ${num(res.sidecarCpuOutage * 100, 1)}% of a core`,
    `replay: ${p.backlogPacks} packs (${num(p.pointsSent)} points sent, ${num(p.bytesSent / 1e6, 2)} MB incl. the new intervals) — collector listening → active ${p.activeAfterMs} ms → all acked ${p.doneAfterMs} ms (replay itself ${p.replayMs} ms); without \`reconnect\` the schedule would have waited ${p.scheduleWaitMs === null ? '—' : `${num(p.scheduleWaitMs / 1000, 1)} s`}; collector: ${JSON.stringify(p.collector)}`,
  ];
  return lines.join('\n');
}

module.exports = { run, report };

if (require.main === module) {
  run().then(
    (res) => {
      const file = argv('--json', undefined);
      if (file !== undefined) writeFileSync(file, `${JSON.stringify(res, null, 2)}\n`);
      process.stdout.write(`${report(res)}\n`);
    },
    (err) => {
      process.stderr.write(`${err.stack}\n`);
      killAll();
      process.exit(1);
    },
  );
}
