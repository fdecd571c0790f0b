import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, it } from 'node:test';
import { ROOT } from '../helpers/procs';

// The size budget of the shim (bench/README.md, "shim JavaScript ≤ 30 KB"; bench/footprint.js (c)),
// checked on the files `node client-shim/bundle.js` built, like size-limit: a change that makes
// the bundle an app loads larger than the budget fails here, not in a later bench run.
const BUDGET_BYTES = 30_000;
const SHIM_PKG = join(ROOT, 'client-shim');

describe('the shim stays within its size budget', () => {
  it(`client-shim/dist/shim.js is at most ${BUDGET_BYTES} B`, () => {
    const size = statSync(join(SHIM_PKG, 'dist', 'shim.js')).size;
    assert.ok(size <= BUDGET_BYTES, `dist/shim.js is ${size} B, ${size - BUDGET_BYTES} B over the budget of ${BUDGET_BYTES} B`);
  });

  it(`requiring the package loads dist/shim.js and nothing else of ours: at most ${BUDGET_BYTES} B of JavaScript`, () => {
    // A fresh process, as an app: every file in require.cache after require() of the package entry.
    const code = `require(${JSON.stringify(SHIM_PKG)}); process.stdout.write(JSON.stringify(Object.keys(require.cache)))`;
    const loaded = JSON.parse(execFileSync(process.execPath, ['-e', code], { encoding: 'utf8' })) as string[];
    assert.deepEqual(
      loaded.map((f) => relative(ROOT, f)),
      [join('client-shim', 'dist', 'shim.js')],
      'one bundled file, proto included; the HTTP instrumentation (dist/shim-http.js) loads only when used',
    );
    const bytes = loaded.reduce((sum, f) => sum + statSync(f).size, 0);
    assert.ok(bytes <= BUDGET_BYTES, `requiring the shim loads ${bytes} B of JavaScript, over the budget of ${BUDGET_BYTES} B`);
  });
});
