import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';

/** A maker of temporary directories named `prefix…`, one per call; all of them are removed after the file's tests. */
export function tempDirsRemovedAfter(prefix: string): () => string {
  const roots: string[] = [];
  after(() => {
    for (const d of roots) rmSync(d, { recursive: true, force: true });
  });
  return () => {
    const d = mkdtempSync(join(tmpdir(), prefix));
    roots.push(d);
    return d;
  };
}
