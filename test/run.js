'use strict';
// Runs every compiled test file with node's test runner. Node 20's --test takes
// no globs, so the files are listed here. Usage: node test/run.js [filter...]
const { mkdtempSync, readdirSync, rmSync, statSync } = require('node:fs');
const { tmpdir } = require('node:os');
const { join, relative } = require('node:path');
const { spawnSync } = require('node:child_process');

const root = join(__dirname, 'dist');
const files = [];
(function walk(dir) {
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p);
    else if (name.endsWith('.test.js')) files.push(p);
  }
})(root);

const filters = process.argv.slice(2);
const chosen = filters.length === 0 ? files : files.filter((f) => filters.some((x) => relative(root, f).includes(x)));
if (chosen.length === 0) {
  console.error('no test files matched');
  process.exit(1);
}
const { snapshot, differences } = require('./sandbox-check');
const before = snapshot();
// No test may hang the run: each test has a deadline, and a test file whose tests are done exits
// even if something it opened was left open (a socket after a failed assertion).
const args = [
  '--test',
  '--test-reporter=spec',
  `--test-concurrency=${process.env.TEST_CONCURRENCY || 2}`,
  `--test-timeout=${process.env.TEST_TIMEOUT_MS || 180000}`,
  '--test-force-exit',
  ...chosen,
];
// Fault cases append their figures here (test/helpers/figures.ts); see test/faults/report.js.
const figuresDir = mkdtempSync(join(tmpdir(), 'apm-figures-'));
const figures = process.env.APM_FIGURES_FILE || join(figuresDir, 'figures.jsonl');
const r = spawnSync(process.execPath, args, { stdio: 'inherit', env: { ...process.env, APM_FIGURES_FILE: figures } });
const changed = differences(before, snapshot());
// After the check: rewriting the figures (make test-faults) is the run's one deliberate write.
const report = require('./faults/report');
let figuresOk = true;
if (process.env.APM_FAULT_REPORT === 'write') report.write(figures);
else figuresOk = report.check(figures, filters.length === 0);
rmSync(figuresDir, { recursive: true, force: true });
if (changed.length > 0) {
  console.error(`the test run wrote outside its temporary directories:\n  ${changed.join('\n  ')}`);
  process.exit(1);
}
if (!figuresOk) process.exit(1);
process.exit(r.status === null ? 1 : r.status);
