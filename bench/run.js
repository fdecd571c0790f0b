'use strict';
/**
 * Runs every bench and prints one results table with the ratios and where each
 * number lands against the targets of the issue. Targets are reported, never
 * asserted: the exit code is 0 whatever the numbers are (non-zero only if a
 * bench could not run).
 *
 *   node bench/run.js [--quick] [--full] [--json FILE] [--cpu-prof DIR]
 *
 *   --quick     shorter rounds and windows (a smoke run, ~2 minutes)
 *   --full      also the unscaled outage (real retention_ms and metric_interval_ms:
 *               a full 3-minute window retained, then replayed; ~4 more minutes)
 *   --json      also write every measured number to FILE
 *   --cpu-prof  write the sidecar's CPU profiles (one per sidecar run) into DIR;
 *               summarize with `node bench/tools/profile-summary.js DIR/<file>`
 *
 * Needs the product built (`npm run build`) and `npm ci --prefix bench`.
 */
const { execFileSync } = require('node:child_process');
const { existsSync, writeFileSync } = require('node:fs');
const { cpus, loadavg } = require('node:os');
const { join, resolve } = require('node:path');
const { num, table } = require('./lib/stats');

const ROOT = resolve(__dirname, '..');
const quick = process.argv.includes('--quick');
const full = process.argv.includes('--full');

function argv(name) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

function preflight() {
  const missing = ['proto/dist/index.js', 'sidecar/dist/cli.js', 'sidecar/dist/retention/store.js', 'collector/dist/cli.js'].filter(
    (f) => !existsSync(join(ROOT, f)),
  );
  try {
    require.resolve(join(ROOT, 'client-shim'));
  } catch {
    missing.push('the client-shim entry (package.json "main")');
  }
  if (missing.length > 0) throw new Error(`build the product first (npm run build): missing ${missing.join(', ')}`);
  for (const m of [
    'hot-shots',
    '@opentelemetry/sdk-metrics',
    '@opentelemetry/api',
    '@opentelemetry/instrumentation-http',
    '@opentelemetry/sdk-trace-node',
    'statsd/stats.js',
  ]) {
    try {
      require.resolve(m, { paths: [__dirname] });
    } catch {
      throw new Error(`bench dependencies missing: run npm ci --prefix bench (${m})`);
    }
  }
}

function gitCommit() {
  try {
    const git = (...a) => execFileSync('git', a, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const dirty = git('status', '--porcelain', '--', 'proto/src', 'client-shim/src', 'sidecar/src').length > 0;
    return `${git('rev-parse', '--short', 'HEAD')}${dirty ? ' + uncommitted product changes' : ''}`;
  } catch {
    return 'unknown';
  }
}

const step = (s) => process.stderr.write(`[bench] ${s}\n`);

async function main() {
  preflight();
  const t0 = Date.now();
  const env = {
    date: new Date().toISOString(),
    node: process.version,
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    loadavgAtStart: loadavg().map((x) => Number(x.toFixed(2))),
    commit: gitCommit(),
  };
  step(`${env.date}  node ${env.node}  ${env.cores} × ${env.cpu}  load ${env.loadavgAtStart.join(' ')}`);

  step('(a) record() cost — one fresh process, all peers in the same run');
  const recordArgs = [join(__dirname, 'record.js'), '--json', ...(quick ? ['--rounds', '7', '--round-ms', '30'] : [])];
  const record = JSON.parse(execFileSync(process.execPath, recordArgs, { cwd: __dirname, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }));

  step('(c) shim size and import time');
  const footprint = require('./footprint').run({ n: quick ? 7 : 21 });

  step('(b) sidecar ingest vs raw socket — 4 sender processes');
  const ingest = await require('./ingest').run({
    seconds: quick ? 2 : 5,
    warmup: quick ? 1 : 2,
    kinds: ['metrics', 'traces', 'events'],
    cpuProfDir: argv('--cpu-prof'),
  });

  step('(d) retention write rate vs raw better-sqlite3 INSERT — one fresh process, same run');
  const retentionArgs = [join(__dirname, 'retention.js'), '--json', '--seconds', quick ? '2' : '10'];
  const retention = JSON.parse(execFileSync(process.execPath, retentionArgs, { cwd: __dirname, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }));

  step(`(e) sidecar RSS through a collector outage, then the replay — real processes, settings ÷ 10${quick ? ', shortened outage' : ''}`);
  const outageBench = require('./outage');
  const outage = await outageBench.run({ quick, full: false, scale: 10, cpuProfDir: argv('--cpu-prof') });
  let outageFull = null;
  if (full) {
    step('(e, --full) the same at the real settings: 3-minute window retained, then replayed');
    outageFull = await outageBench.run({ quick: false, full: true, scale: 1 });
  }
  env.loadavgAtEnd = loadavg().map((x) => Number(x.toFixed(2)));
  env.seconds = Math.round((Date.now() - t0) / 1000);

  const res = { env, record, footprint, ingest, retention, outage, outageFull };
  const file = argv('--json');
  if (file !== undefined) writeFileSync(file, `${JSON.stringify(res, null, 2)}\n`);
  process.stdout.write(report(res));

  // (f) runs last, in its own process, and prints its own table (see bench/upstream.js).
  step('(f) upstream throughput through an established session, next to the raw ciphers; handshake time; collector CPU per MB');
  execFileSync(process.execPath, [join(__dirname, 'upstream.js'), ...(quick ? ['--quick'] : [])], { cwd: __dirname, stdio: 'inherit' });

  // (g) likewise: an honest agent and the collector's memory, without and with a pre-auth attack.
  step('(g) pre-authentication attack: honest agent ack latency and collector RSS, without and with 200 trickling connections');
  execFileSync(process.execPath, [join(__dirname, 'preauth.js'), ...(quick ? ['--quick'] : [])], { cwd: __dirname, stdio: 'inherit' });

  // (h) likewise: HTTP auto-instrumentation, next to @opentelemetry/instrumentation-http.
  step('(h) HTTP instrumentation overhead: requests/s and server CPU per request, bare vs apm.instrumentHttp() vs @opentelemetry/instrumentation-http');
  const httpArgs = quick ? ['--seconds', '1', '--rounds', '2'] : ['--seconds', '3', '--rounds', '5'];
  execFileSync(process.execPath, [join(__dirname, 'http.js'), ...httpArgs], { cwd: __dirname, stdio: 'inherit' });

  // (i) likewise: the collector's ingest latency while old data is pruned, next to none.
  step('(i) pruning by age: collector ingest commit latency without and with the pruner, rows pruned per second');
  execFileSync(process.execPath, [join(__dirname, 'prune.js'), ...(quick ? ['--quick'] : [])], { cwd: __dirname, stdio: 'inherit' });

  // (j) likewise: DogStatsD over UDP next to Etsy statsd 0.9.0, then the sidecar's growth with the series count.
  step("(j) DogStatsD: the sidecar's dogstatsd_udp vs statsd 0.9.0, same datagrams at 100k and 200k lines/s; CPU per line by series count");
  const dsdArgs = quick ? ['--seconds', '2', '--warmup', '1'] : ['--seconds', '5', '--warmup', '2'];
  const dsdProf = argv('--cpu-prof') === undefined ? [] : ['--cpu-prof', argv('--cpu-prof')];
  execFileSync(process.execPath, [join(__dirname, 'dogstatsd.js'), ...dsdArgs, ...dsdProf], { cwd: __dirname, stdio: 'inherit' });
  execFileSync(process.execPath, [join(__dirname, 'dogstatsd.js'), ...dsdArgs, '--growth', quick ? '1000,100000' : '1000,10000,100000'], {
    cwd: __dirname,
    stdio: 'inherit',
  });

  // (k) likewise: the collector's metric store path, and its CPU per point at 1, 10 and 100 agents.
  step('(k) collector metric store: points per collector CPU-second at 1, 10 and 100 agents (series grow with them), decode and store alone in process');
  execFileSync(process.execPath, [join(__dirname, 'collector-store.js'), ...(quick ? ['--quick'] : [])], { cwd: __dirname, stdio: 'inherit' });

  // (l) likewise: the handshake, TCP connect → active, next to a bare TCP connect + round trips.
  step('(l) upstream handshake: connect → active against a real collector, next to TCP connect + 1 and 2 round trips');
  execFileSync(process.execPath, [join(__dirname, 'handshake.js'), ...(quick ? ['--quick'] : [])], { cwd: __dirname, stdio: 'inherit' });

  // (m) likewise: collectors on SQLite, on PostgreSQL, and two on one PostgreSQL, PostgreSQL's CPU apart.
  step('(m) scale-out: metric points and traces per second and per CPU-second, SQLite vs one and two collectors on one PostgreSQL');
  execFileSync(process.execPath, [join(__dirname, 'scale-out.js'), ...(quick ? ['--quick'] : [])], { cwd: __dirname, stdio: 'inherit' });
}

/**
 * Flat once the retention window is full: over the last half of the outage (or, when the window
 * filled later than half-way, over what follows the fill, if that is at least a minute) the trend
 * is < 2 MiB and max − min < 5 MiB.
 */
function isFlat(rss) {
  const h = rss.flat;
  if (h === null) return false;
  const trend = (h.slopeMiBPerMin * (h.to - h.from)) / 60;
  return trend < 2 && h.spreadMiB < 5;
}

function report({ env, record, footprint, ingest, retention, outage, outageFull }) {
  const rec = Object.fromEntries(record.rows.map((r) => [r.key, r]));
  const pair = Object.fromEntries(ingest.pairs.map((p) => [p.kind, p]));
  const m = pair.metrics.sidecar;
  const tr = pair.traces.sidecar;
  const ev = pair.events.sidecar;
  const shimImport = footprint.imports.find((x) => x.key === 'shim');
  const verdict = (ok) => (ok ? 'meets' : 'MISSES');

  const out = [];
  out.push(
    `apm-sidecar benchmarks — ${env.date}, commit ${env.commit}, node ${env.node}, ${env.cores} × ${env.cpu}, load ${env.loadavgAtStart.join('/')} → ${env.loadavgAtEnd.join('/')}, ${env.seconds} s`,
  );
  out.push('');
  out.push('(a) cost per histogram.record(), same process, same loop, median of rounds');
  out.push(
    table(
      ['call', 'median ns', 'p25–p75 ns', 'vs shim'],
      record.rows.map((r) => [r.name, num(r.medianNs, 1), `${num(r.p25Ns, 1)}–${num(r.p75Ns, 1)}`, `${num(r.medianNs / rec.shim.medianNs, 2)}×`]),
    ),
  );
  out.push('');
  out.push(
    '(b) sidecar ingest from 4 shim processes, next to floors on the same frames (the proto decoder alone; JSON.parse alone for JSON bodies) and a raw socket (context)',
  );
  out.push(
    table(
      [
        'frames',
        'sidecar /s',
        'sidecar /CPU-s',
        'decoder alone /CPU-s',
        'sidecar ÷ decoder',
        'JSON.parse alone /CPU-s',
        'sidecar ÷ JSON.parse',
        'raw socket /CPU-s (context)',
      ],
      ingest.pairs.map((p) => [
        `${p.kind} (${p.floor.frameType}, ${num(p.sidecar.frameBytes)} B/frame)`,
        num(p.sidecar.framesPerSec),
        num(p.sidecar.framesPerCpuSec),
        num(p.floor.decoderPerCpuSec),
        `${num(p.decoderRatio * 100, 1)}%`,
        p.jsonParseRatio === null ? '—' : num(p.floor.jsonParsePerCpuSec),
        p.jsonParseRatio === null ? '—' : `${num(p.jsonParseRatio * 100, 1)}%`,
        num(p.raw.framesPerCpuSec),
      ]),
    ),
  );
  out.push(
    `metrics: ${num(m.pointsPerSec)} points/s, ${num(m.pointsPerCpuSec)} points per sidecar CPU-second; each point carries count = ${m.samplesPerPoint} samples → ${num(m.samplesPerSec)} samples/s (${num(m.samplesPerCpuSec)} per CPU-second).`,
  );
  for (const x of ingest.results.filter((r) => r.mode === 'sidecar')) {
    const dropped = Object.entries(x.dropped).filter(([, v]) => v > 0);
    const sent = Object.values(x.sent).reduce((a, b) => a + b, 0);
    out.push(
      `  ${x.kind}: sidecar used ${num(x.receiverCores, 2)} cores; delivered to the debug transport ${num(sent / x.wallSeconds)}/s; dropped ${dropped.length ? dropped.map(([k, v]) => `${k} ${num(v / x.wallSeconds)}/s`).join(', ') : 'none'}`,
    );
  }
  out.push('');
  out.push('(c) shim footprint');
  const s = footprint.size;
  out.push(
    `  JavaScript loaded by require('${s.entry}'): ${num(s.loadedBytes)} B in ${s.loadedFiles.length} file(s) (shim ${num(s.shimLoadedBytes)} B + proto ${num(s.protoLoadedBytes)} B); shipped .js ${num(s.shippedJsBytes)} B; third-party: ${s.thirdParty.length ? s.thirdParty.join(', ') : 'none'}`,
  );
  out.push(
    `  import (require only, median of ${shimImport.n} fresh processes): ${footprint.imports.map((x) => `${x.name} ${num(x.medianMs, 2)} ms`).join(' · ')}`,
  );
  out.push('');
  out.push(
    `(d) retention write rate: RetentionStore.addFrame with group commit vs a raw better-sqlite3 INSERT of the same rows (${retention.shims} shims × ${retention.seriesPerFrame} series per frame, ${num(retention.frameBytes)} B, ${retention.batch} frames per transaction)`,
  );
  out.push(
    table(
      ['synchronous', 'store frames/s', 'store points/s', 'raw frames/s', 'raw points/s', 'store ÷ raw, wall', 'store ÷ raw, per CPU-s'],
      retention.cases.map((c) => [
        c.sync,
        num(c.store.framesPerSec),
        num(c.store.pointsPerSec),
        num(c.raw.framesPerSec),
        num(c.raw.pointsPerSec),
        `${num(c.ratio * 100, 1)}%`,
        `${num(c.cpuRatio * 100, 1)}%`,
      ]),
    ),
  );
  out.push('');
  for (const [label, o] of [
    ['(e) outage', outage],
    ['(e, --full) outage at the real settings', outageFull],
  ]) {
    if (o === null) continue;
    const r = o.rss;
    const p = o.replay;
    const f = (v, d = 1) => (v === null || v === undefined ? '—' : num(v, d));
    out.push(
      `${label}: ${o.config.shims} shims × ${o.config.seriesPerShim} series at 1 flush/s; sidecar retention_ms ${o.config.retentionMs}, metric_interval_ms ${o.config.intervalMs} (settings ÷ ${o.config.scale}); outage ${o.config.outageMs / 1000} s = ${num(o.equivalentOutageMin, 1)} min at real settings`,
    );
    out.push(
      table(
        [
          'RSS start',
          'RSS at window full',
          'RSS end',
          'RSS max (outage)',
          'once full: slope, max − min',
          'replay: packs, points',
          'collector back → all acked',
          'of which active → acked',
        ],
        [
          [
            `${f(r.startMiB)} MiB`,
            `${f(r.atFillMiB)} MiB (${f(r.fillAfterS, 0)} s)`,
            `${f(r.endMiB)} MiB`,
            `${f(r.maxOutageMiB)} MiB`,
            `${f(r.flat?.slopeMiBPerMin, 2)} MiB/min, ${f(r.flat?.spreadMiB)} MiB (${r.flatBasis})`,
            `${p.backlogPacks}, ${num(p.pointsSent)}`,
            `${num(p.doneAfterMs)} ms`,
            `${num(p.replayMs)} ms`,
          ],
        ],
      ),
    );
    out.push('');
  }
  out.push('targets (reported, not asserted)');
  const rows = [
    ['record() median', '≤ 50 ns', `${num(rec.shim.medianNs, 1)} ns`, verdict(rec.shim.medianNs <= 50)],
    [
      'hot-shots timing() ÷ record()',
      '≥ 20×',
      `${num(rec.hotshots.medianNs / rec.shim.medianNs, 1)}×`,
      verdict(rec.hotshots.medianNs / rec.shim.medianNs >= 20),
    ],
    ['record() ÷ OTel record(v, attrs)', '≤ 1.5×', `${num(rec.shim.medianNs / rec.otel.medianNs, 2)}×`, verdict(rec.shim.medianNs / rec.otel.medianNs <= 1.5)],
    [
      'record() ÷ OTel record(v), no attributes',
      '≤ 1.5×',
      `${num(rec.shim.medianNs / rec.otelBare.medianNs, 2)}×`,
      verdict(rec.shim.medianNs / rec.otelBare.medianNs <= 1.5),
    ],
    [
      'metric samples per sidecar CPU-second',
      '≥ 1,000,000',
      `${num(m.samplesPerCpuSec)} (${num(m.pointsPerCpuSec)} points × ${m.samplesPerPoint}; 1 M needs ≥ ${Math.ceil(1e6 / m.pointsPerCpuSec)} samples/point)`,
      verdict(m.samplesPerCpuSec >= 1e6),
    ],
    ['trace frames per sidecar CPU-second', '≥ 200,000', num(tr.framesPerCpuSec), verdict(tr.framesPerCpuSec >= 2e5)],
    ['event frames per sidecar CPU-second', '≥ 200,000', num(ev.framesPerCpuSec), verdict(ev.framesPerCpuSec >= 2e5)],
    // The floor is the cheapest honest decode of the same frames: JSON.parse alone for JSON bodies, else the proto decoder alone.
    ...ingest.pairs.map((p) => {
      const [what, ratio] = p.jsonParseRatio === null ? ['proto decoder alone', p.decoderRatio] : ['JSON.parse alone', p.jsonParseRatio];
      return [`${p.kind}: sidecar ÷ ${what} (per CPU-s)`, '≥ 50%', `${num(ratio * 100, 1)}%`, verdict(ratio >= 0.5)];
    }),
    ['shim JavaScript (loaded)', '≤ 30 KB', `${num(s.loadedBytes)} B`, verdict(s.loadedBytes <= 30_000)],
    ['shim import time', '≤ 5 ms', `${num(shimImport.medianMs, 2)} ms`, verdict(shimImport.medianMs <= 5)],
    ...retention.cases.map((c) => [
      `retention commit rate ÷ raw INSERT (${c.sync})`,
      '≥ 50%',
      `${num(c.ratio * 100, 1)}% (${num(c.store.pointsPerSec)} points/s)`,
      verdict(c.ratio >= 0.5),
    ]),
  ];
  for (const [label, o] of [
    ['', outage],
    [', real settings', outageFull],
  ]) {
    if (o === null) continue;
    const mins = num(o.equivalentOutageMin, 1);
    rows.push([`sidecar RSS, ${mins}-min outage${label} (max)`, '≤ 100 MiB', `${num(o.rss.maxOutageMiB, 1)} MiB`, verdict(o.rss.maxOutageMiB <= 100)]);
    const h = o.rss.flat;
    rows.push([
      `sidecar RSS flat once the window is full${label}`,
      'trend < 2 MiB, max − min < 5 MiB',
      h === null ? '—' : `${o.rss.flatBasis}: ${num(h.slopeMiBPerMin, 2)} MiB/min over ${num(h.to - h.from, 0)} s, max − min ${num(h.spreadMiB, 1)} MiB`,
      // E.g. --quick (30 s) or --full (200 s): the outage ends soon after the window fills, too soon to judge a trend.
      o.rss.flatJudged ? verdict(isFlat(o.rss)) : '— (outage ended < 1 min after the window filled)',
    ]);
    rows.push([
      `replay of 3 min of retained metrics${label}`,
      '(reported)',
      `${num(o.replay.doneAfterMs)} ms (${o.replay.backlogPacks} packs, ${num(o.replay.pointsSent)} points)`,
      '—',
    ]);
  }
  out.push(table(['target', 'goal', 'measured', ''], rows));
  out.push('');
  return `${out.join('\n')}\n`;
}

main().catch((err) => {
  process.stderr.write(`[bench] failed: ${err.stack ?? err}\n`);
  process.exit(1);
});
