import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { SIDECAR_STATES } from '@apm-sidecar/proto';
import { KEEP_POLICY, type Keep, keepPolicy } from '@apm-sidecar/sidecar';

type Kind = keyof typeof KEEP_POLICY;
type Where = 'queue1' | 'queue2' | 'ring' | 'drop';

const where = (k: Keep): Where => (typeof k === 'object' ? 'drop' : k);

/** DESIGN.md sits in `shared/` next to the repository (`../shared/DESIGN.md` from its root); APM_DESIGN_MD overrides. */
function designPath(): string {
  const root = join(__dirname, '..', '..', '..');
  return process.env.APM_DESIGN_MD ?? join(root, '..', 'shared', 'DESIGN.md');
}

/** The rows of DESIGN §6 "What is kept, by state" → the kinds they speak of. */
function kindsOf(label: string): Kind[] {
  if (/metrics/i.test(label)) return ['metrics'];
  if (/registration/i.test(label)) return ['btRegistration'];
  if (/traces|active stacks/i.test(label)) return ['trace', 'activeStack'];
  if (/events|snapshots/i.test(label)) return ['event', 'snapshot'];
  throw new Error(`DESIGN table: a row this test does not know: ${JSON.stringify(label)}`);
}

/** What a DESIGN cell says, as where the pack goes; `same` repeats the cell on its left. */
function classify(cell: string, left: Where | null): Where {
  const c = cell.trim();
  if (/^same$/i.test(c)) {
    if (left === null) throw new Error('DESIGN table: "same" in the first column');
    return left;
  }
  if (/^none$/i.test(c) || /not produced|dropped/i.test(c)) return 'drop';
  if (/queue2/i.test(c)) return 'queue2';
  if (/^ring\b/i.test(c)) return 'ring';
  if (/SQLite/i.test(c)) return 'queue1';
  throw new Error(`DESIGN table: a cell this test cannot read: ${JSON.stringify(c)}`);
}

const cells = (line: string): string[] =>
  line
    .trim()
    .replace(/^\||\|$/g, '')
    .split('|')
    .map((s) => s.trim());

/** Parses the markdown table that starts with `| kind |`: states from its header, one entry per kind × state. */
function parseDesignTable(md: string): { states: string[]; rows: { label: string; cells: string[]; kinds: Kind[]; where: Where[] }[] } {
  const lines = md.split('\n');
  const start = lines.findIndex((l) => /^\|\s*kind\s*\|/.test(l));
  if (start < 0) throw new Error('DESIGN.md has no table starting with "| kind |"');
  const states = cells(lines[start] as string)
    .slice(1)
    .map((h) => (h.split(/[\s(]/)[0] as string).toLowerCase());
  const rows = [];
  for (let i = start + 2; i < lines.length && (lines[i] as string).startsWith('|'); i++) {
    const [label, ...rest] = cells(lines[i] as string);
    const w: Where[] = [];
    for (const c of rest) w.push(classify(c, w.at(-1) ?? null));
    rows.push({ label: label as string, cells: rest, kinds: kindsOf(label as string), where: w });
  }
  return { states, rows };
}

describe('keep policy (DESIGN §6 "What is kept, by state" as data)', () => {
  test('the policy table, printed', () => {
    const kinds = Object.keys(KEEP_POLICY) as Kind[];
    const out = [`| kind | ${SIDECAR_STATES.join(' | ')} |`, `|---|${SIDECAR_STATES.map(() => '---|').join('')}`];
    for (const k of kinds) out.push(`| ${k} | ${SIDECAR_STATES.map((s) => JSON.stringify(keepPolicy(k, s)).replace(/"/g, '')).join(' | ')} |`);
    console.log(`keep policy (sidecar/src/link/keep-policy.ts):\n${out.join('\n')}`);
    assert.equal(out.length, 2 + 6);
  });

  test('agrees with the table in DESIGN.md, cell by cell', (t) => {
    const path = designPath();
    if (!existsSync(path)) {
      t.skip(`DESIGN.md not found at ${path} (set APM_DESIGN_MD to compare with it)`);
      return;
    }
    const design = parseDesignTable(readFileSync(path, 'utf8'));
    assert.deepEqual(design.states, ['reconnecting', 'standby', 'muted']);
    const side: string[] = [];
    const wrong: string[] = [];
    for (const row of design.rows) {
      for (const kind of row.kinds) {
        design.states.forEach((state, i) => {
          const want = row.where[i] as Where;
          const have = where(keepPolicy(kind, state as (typeof SIDECAR_STATES)[number]));
          side.push(`${kind.padEnd(15)} ${state.padEnd(13)} DESIGN: ${(row.cells[i] as string).padEnd(52)} → ${want.padEnd(7)} policy: ${have}`);
          if (want !== have) wrong.push(`${kind} in ${state}: DESIGN says ${want}, the policy ${have}`);
        });
      }
    }
    console.log(`keep policy next to DESIGN §6 (${path}):\n${side.join('\n')}`);
    assert.equal(new Set(design.rows.flatMap((r) => r.kinds)).size, Object.keys(KEEP_POLICY).length, 'every kind is in the DESIGN table');
    assert.deepEqual(wrong, []);
  });

  test('the states outside the DESIGN table: connecting keeps what reconnecting keeps, active sends, stopped keeps what standby keeps', () => {
    for (const k of Object.keys(KEEP_POLICY) as Kind[]) {
      assert.deepEqual(keepPolicy(k, 'connecting'), keepPolicy(k, 'reconnecting'), k);
      assert.deepEqual(where(keepPolicy(k, 'stopped')), where(keepPolicy(k, 'standby')), k);
      assert.ok(['queue1', 'queue2'].includes(where(keepPolicy(k, 'active'))), `${k} is sent when active`);
    }
  });

  test('a cell the reader cannot classify is an error, not a silent pass', () => {
    assert.throws(() => classify('kept somewhere else', null), /cannot read/);
    assert.throws(() => kindsOf('profiles'), /does not know/);
  });
});
