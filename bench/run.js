'use strict';
/**
 * Runs every bench and prints one results table with the ratios and where each
 * number lands against the targets of the issue. Targets are reported, never
 * asserted: the exit code is 0 whatever the numbers are (non-zero only if a
 * bench could not run).
 *
 *   node bench/run.js [--quick] [--json FILE] [--cpu-prof DIR]
 *
 *   --quick     shorter rounds and windows (a smoke run, ~1 minute)
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

function argv(name) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

function preflight() {
  const missing = ['proto/dist/index.js', 'sidecar/dist/cli.js'].filter((f) => !existsSync(join(ROOT, f)));
  try {
    require.resolve(join(ROOT, 'client-shim'));
  } catch {
    missing.push('the client-shim entry (package.json "main")');
  }
  if (missing.length > 0) throw new Error(`build the product first (npm run build): missing ${missing.join(', ')}`);
  for (const m of ['hot-shots', '@opentelemetry/sdk-metrics', '@opentelemetry/api']) {
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
  env.loadavgAtEnd = loadavg().map((x) => Number(x.toFixed(2)));
  env.seconds = Math.round((Date.now() - t0) / 1000);

  const res = { env, record, footprint, ingest };
  const file = argv('--json');
  if (file !== undefined) writeFileSync(file, `${JSON.stringify(res, null, 2)}\n`);
  process.stdout.write(report(res));
}

function report({ env, record, footprint, ingest }) {
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
  out.push('(b) sidecar ingest from 4 shim processes vs a raw socket reading the same bytes');
  out.push(
    table(
      ['frames', 'sidecar /s', 'sidecar /CPU-s', 'raw /s (equiv.)', 'raw /CPU-s', 'sidecar ÷ raw, wall', 'sidecar ÷ raw, per CPU-s'],
      ingest.pairs.map((p) => [
        `${p.kind} (${num(p.sidecar.frameBytes)} B/frame)`,
        num(p.sidecar.framesPerSec),
        num(p.sidecar.framesPerCpuSec),
        num(p.raw.framesPerSec),
        num(p.raw.framesPerCpuSec),
        `${num(p.wallRatio * 100, 1)}%`,
        `${num(p.cpuRatio * 100, 1)}%`,
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
    ...ingest.pairs.map((p) => [`${p.kind}: sidecar ÷ raw socket (wall)`, '≥ 50%', `${num(p.wallRatio * 100, 1)}%`, verdict(p.wallRatio >= 0.5)]),
    ['shim JavaScript (loaded)', '≤ 30 KB', `${num(s.loadedBytes)} B`, verdict(s.loadedBytes <= 30_000)],
    ['shim import time', '≤ 5 ms', `${num(shimImport.medianMs, 2)} ms`, verdict(shimImport.medianMs <= 5)],
  ];
  out.push(table(['target', 'goal', 'measured', ''], rows));
  out.push('');
  return `${out.join('\n')}\n`;
}

main().catch((err) => {
  process.stderr.write(`[bench] failed: ${err.stack ?? err}\n`);
  process.exit(1);
});
