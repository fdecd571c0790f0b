import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { tempDir } from '../helpers/procs';

interface SandboxCheck {
  GUARDED: string[];
  snapshot(roots?: string[]): Map<string, string>;
  differences(before: Map<string, string>, after: Map<string, string>): string[];
}
// test/run.js compares these snapshots around the whole run; it lives beside run.js as plain JS.
const check = require(join(__dirname, '..', '..', 'sandbox-check.js')) as SandboxCheck;

describe('the check that tests stay in their sandbox', () => {
  const tmp = tempDir();
  after(() => tmp.cleanup());

  test('guards the sidecar system paths', () => {
    assert.deepEqual(check.GUARDED, ['/var/lib/apm-sidecar', '/var/run/apm-sidecar']);
  });

  test('reports a created directory, a created file and a changed file', () => {
    const root = join(tmp.dir, 'guarded');
    const before = check.snapshot([root]);
    mkdirSync(root);
    writeFileSync(join(root, 'retention.db'), 'x');
    const mid = check.snapshot([root]);
    assert.deepEqual(check.differences(before, mid), [`created ${root}`, `created ${join(root, 'retention.db')}`]);
    writeFileSync(join(root, 'retention.db'), 'xyz');
    assert.deepEqual(check.differences(mid, check.snapshot([root])), [`changed ${join(root, 'retention.db')}`]);
  });

  test('reports nothing when nothing changed', () => {
    const root = join(tmp.dir, 'still');
    mkdirSync(root);
    writeFileSync(join(root, 'f'), 'x');
    assert.deepEqual(check.differences(check.snapshot([root]), check.snapshot([root])), []);
  });
});
