import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, test } from 'node:test';
import { ApmError } from '@apm-sidecar/proto';

interface Catalog {
  classes: { name: string; parent: string; pkg: string; file: string; doc: string; codes: string[] }[];
  inline: { code: string; cls: string; file: string }[];
  answers: { code: string; file: string }[];
}
interface ErrorCatalog {
  collect(): Catalog;
  render(c: Catalog): string;
  codesInDoc(text: string): Set<string>;
  codesInCode(c: Catalog): Set<string>;
  DOC: string;
}

const ROOT = join(__dirname, '..', '..', '..');
// docs/gen-errors.js is plain JS beside the docs it writes; the test reads the sources the same way.
const gen = require(join(ROOT, 'docs', 'gen-errors.js')) as ErrorCatalog;
const PRODUCT = ['proto', 'client-shim', 'sidecar', 'collector'].map((p) => join(ROOT, p, 'src'));

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) return sources(p);
    return name.endsWith('.ts') && !name.endsWith('.d.ts') ? [p] : [];
  });
}

describe('the error catalog (docs/errors.md)', () => {
  const catalog = gen.collect();

  test('lists every code the sources raise or answer with, and no other', () => {
    assert.ok(existsSync(gen.DOC), 'docs/errors.md is missing: run node docs/gen-errors.js');
    const inDoc = gen.codesInDoc(readFileSync(gen.DOC, 'utf8'));
    const inCode = gen.codesInCode(catalog);
    const missing = [...inCode].filter((c) => !inDoc.has(c)).sort();
    const stale = [...inDoc].filter((c) => !inCode.has(c)).sort();
    assert.deepEqual({ missing, stale }, { missing: [], stale: [] }, 'docs/errors.md is out of date: run node docs/gen-errors.js');
  });

  test('finds the family: known classes with their codes, and no class without a meaning', () => {
    const byName = new Map(catalog.classes.map((c) => [c.name, c]));
    assert.deepEqual(byName.get('FrameTooLargeError')?.codes, ['ERR_FRAME_TOO_LARGE']);
    assert.deepEqual(byName.get('StoreCorruptError')?.codes, ['ERR_STORE_CORRUPT']);
    assert.deepEqual(byName.get('BadQueryError')?.codes, ['ERR_BAD_QUERY']);
    assert.deepEqual(byName.get('TunnelHttpError')?.codes.sort(), ['ERR_TUNNEL_HTTP', 'ERR_TUNNEL_SESSION']);
    assert.equal(byName.get('SnapshotDataError')?.pkg, '@apm-sidecar/shim');
    const undocumented = catalog.classes.filter((c) => c.codes.length > 0 && c.doc === '').map((c) => c.name);
    assert.deepEqual(undocumented, [], 'every error class with a code has a doc comment saying what it means');
  });

  test('the family is one: every exported error class of the product extends ApmError', async () => {
    const modules = await Promise.all(
      ['@apm-sidecar/proto', '@apm-sidecar/proto/upstream', '@apm-sidecar/sidecar', '@apm-sidecar/collector'].map((m) => import(m)),
    );
    let seen = 0;
    for (const mod of modules) {
      for (const [name, value] of Object.entries(mod as Record<string, unknown>)) {
        if (typeof value !== 'function' || !/^[A-Z]\w*Error$/.test(name)) continue;
        seen++;
        assert.ok(value === ApmError || (value as { prototype: unknown }).prototype instanceof ApmError, `${name} does not extend ApmError`);
      }
    }
    assert.ok(seen > 20, `found only ${seen} exported error classes`);
  });

  test('product code raises no plain Error, TypeError or RangeError and no ApmError with an inline code', () => {
    const offenders: string[] = [];
    for (const dir of PRODUCT) {
      for (const file of sources(dir)) {
        readFileSync(file, 'utf8')
          .split('\n')
          .forEach((line, i) => {
            if (/\bnew (Error|TypeError|RangeError|ApmError)\(/.test(line)) offenders.push(`${relative(ROOT, file)}:${i + 1}: ${line.trim()}`);
          });
      }
    }
    assert.deepEqual(offenders, []);
  });
});
