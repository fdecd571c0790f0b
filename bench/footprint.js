'use strict';
/**
 * (c) The shim's weight in an application.
 *
 * Size: the bytes of JavaScript an app loads when it requires the shim —
 * every file in require.cache after requiring the package entry
 * (client-shim/package.json "main") in a fresh process: the shim's own dist
 * files plus the proto dist files it pulls in, if any (no .d.ts, no source
 * maps). For reference, also the .js files the package ships (its "files"
 * globs) and everything under client-shim/dist/*.js (build intermediates
 * included).
 *
 * Import time: the median over N fresh `node -e` processes of process.hrtime
 * around require() of the shim — and, for context, of the peers and of an empty
 * file (the floor: the first require() in a process sets up the CJS loader).
 *
 *   node bench/footprint.js [--json] [--n N]
 */
const { execFileSync } = require('node:child_process');
const { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } = require('node:fs');
const { tmpdir } = require('node:os');
const { join, resolve, relative, sep } = require('node:path');
const { median, num, table } = require('./lib/stats');

const ROOT = resolve(__dirname, '..');
const SHIM_PKG = join(ROOT, 'client-shim');
const SHIM = require.resolve(SHIM_PKG);

function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

function nodeEval(code, cwd = __dirname) {
  return execFileSync(process.execPath, ['-e', code], { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
}

/** Files under dir (recursively), as paths relative to dir with '/' separators. */
function walk(dir, base = dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) {
      if (name !== 'node_modules') out.push(...walk(p, base));
    } else out.push(relative(base, p).split(sep).join('/'));
  }
  return out;
}

/** A package.json "files" glob as a RegExp (enough for `dist/**\/*.js`-style patterns). */
function globRe(g) {
  const re = g
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*\*\//g, '@@DIRS@@')
    .replace(/\*/g, '[^/]*')
    .replace(/@@DIRS@@/g, '(?:.*/)?');
  return new RegExp(`^${re}$`);
}

function shimSize() {
  const loaded = JSON.parse(nodeEval(`require(${JSON.stringify(SHIM)}); process.stdout.write(JSON.stringify(Object.keys(require.cache)))`));
  const size = (f) => statSync(f).size;
  const sum = (files) => files.reduce((a, f) => a + size(f), 0);
  const within = (dir) => (f) => f.startsWith(join(ROOT, dir) + sep);
  const shimLoaded = loaded.filter(within('client-shim'));
  const protoLoaded = loaded.filter(within('proto'));
  const thirdParty = loaded.filter((f) => !within('client-shim')(f) && !within('proto')(f));
  const pkg = JSON.parse(readFileSync(join(SHIM_PKG, 'package.json'), 'utf8'));
  const globs = (pkg.files ?? []).map(globRe);
  const shipped = walk(SHIM_PKG).filter((f) => f.endsWith('.js') && globs.some((re) => re.test(f)));
  const distJs = readdirSync(join(SHIM_PKG, 'dist')).filter((f) => f.endsWith('.js'));
  return {
    entry: relative(ROOT, SHIM),
    loadedBytes: sum(loaded),
    loadedFiles: loaded.map((f) => `${relative(ROOT, f)} (${size(f)} B)`),
    shimLoadedBytes: sum(shimLoaded),
    protoLoadedBytes: sum(protoLoaded),
    thirdParty: thirdParty.map((f) => relative(ROOT, f)),
    shippedJsBytes: sum(shipped.map((f) => join(SHIM_PKG, f))),
    shippedJsFiles: shipped,
    distJsBytes: sum(distJs.map((f) => join(SHIM_PKG, 'dist', f))),
    distJsFiles: distJs.length,
  };
}

function importMs(modulePath, n, after = '') {
  const code = `const t0 = process.hrtime.bigint(); require(${JSON.stringify(modulePath)})${after}; const t1 = process.hrtime.bigint(); process.stdout.write(String(Number(t1 - t0) / 1e6));`;
  const samples = [];
  for (let i = 0; i < n; i++) samples.push(Number(nodeEval(code)));
  return { medianMs: median(samples), minMs: Math.min(...samples), maxMs: Math.max(...samples), n };
}

function run({ n = arg('--n', 21) } = {}) {
  const size = shimSize();
  // The floor: what the first require() of an empty file costs in a fresh process.
  const dir = mkdtempSync(join(tmpdir(), 'apm-bench-empty-'));
  const empty = join(dir, 'empty.js');
  writeFileSync(empty, "'use strict';\n");
  const floor = importMs(empty, n);
  rmSync(dir, { recursive: true, force: true });
  const imports = [
    { key: 'shim', name: '@apm-sidecar/shim', ...importMs(SHIM, n) },
    // What the app pays in all before its first record: node:net and node:crypto load here, at the
    // first connection attempt, not at import.
    {
      key: 'shimConnect',
      name: '@apm-sidecar/shim, require + connect() (absent socket)',
      ...importMs(SHIM, n, ".connect({ socket: '/nonexistent/apm.sock' })"),
    },
    { key: 'empty', name: 'floor: an empty .js file', ...floor },
    { key: 'hotshots', name: 'hot-shots', ...importMs('hot-shots', n) },
    { key: 'otel', name: '@opentelemetry/api + sdk-metrics', ...importMs('@opentelemetry/sdk-metrics', n) },
  ];
  return { size, imports };
}

function report(res) {
  const s = res.size;
  return [
    `shim JavaScript loaded by require('${s.entry}'): ${num(s.loadedBytes)} B in ${s.loadedFiles.length} files (shim ${num(s.shimLoadedBytes)} B + proto ${num(s.protoLoadedBytes)} B)`,
    ...s.loadedFiles.map((f) => `  ${f}`),
    `shipped .js (package.json "files"): ${num(s.shippedJsBytes)} B (${s.shippedJsFiles.join(', ')}); client-shim/dist/*.js incl. build intermediates: ${num(s.distJsBytes)} B in ${s.distJsFiles} files`,
    `third-party files loaded by the shim: ${s.thirdParty.length === 0 ? 'none' : s.thirdParty.join(', ')}`,
    '',
    table(
      ['import (fresh process)', 'median ms', 'min–max ms', 'processes'],
      res.imports.map((r) => [r.name, num(r.medianMs, 2), `${num(r.minMs, 2)}–${num(r.maxMs, 2)}`, String(r.n)]),
    ),
  ].join('\n');
}

module.exports = { run, report };

if (require.main === module) {
  const res = run();
  process.stdout.write(process.argv.includes('--json') ? `${JSON.stringify(res)}\n` : `${report(res)}\n`);
}
