'use strict';
/**
 * Writes docs/errors.md, the catalog of every error code, from the product's sources
 * (proto, client-shim, sidecar, collector), so the catalog is read from the same files that raise them:
 *
 *   - every class of the ApmError family with the code(s) its constructor passes to super(),
 *     its package and its doc comment;
 *   - codes passed inline to a family class that takes its code as an argument (`new X('ERR_..', ..)`);
 *   - codes answered or logged without an error object (HTTP error bodies, session refusals), with
 *     the message written next to them.
 *
 *   node docs/gen-errors.js           write docs/errors.md
 *   node docs/gen-errors.js --stdout  print it instead
 *
 * test/unit/error-catalog.test.ts uses collect() and codesInDoc() to fail when the file is out of date.
 */
const { readFileSync, readdirSync, statSync, writeFileSync } = require('node:fs');
const { join, relative } = require('node:path');

const ROOT = join(__dirname, '..');
const PACKAGES = ['proto', 'client-shim', 'sidecar', 'collector'];
const CODE = /^ERR_[A-Z0-9_]+$/;

function sourceFiles(dir) {
  const out = [];
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...sourceFiles(p));
    else if (name.endsWith('.ts') && !name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

/** The text of the JSDoc comment that ends right before `index` (only white space between), as one line. */
function docBefore(text, index) {
  const before = text.slice(0, index).trimEnd();
  if (!before.endsWith('*/')) return '';
  const start = before.lastIndexOf('/**');
  if (start < 0) return '';
  return before
    .slice(start + 3, -2)
    .split('\n')
    .map((l) => l.replace(/^\s*\*\s?/, '').trim())
    .filter((l) => l.length > 0)
    .join(' ');
}

/** The class body starting at `open` (the index of its `{`), braces matched; strings are plain enough here not to confuse it. */
function bodyFrom(text, open) {
  let depth = 0;
  for (let i = open; i < text.length; i++) {
    if (text[i] === '{') depth++;
    else if (text[i] === '}' && --depth === 0) return text.slice(open, i + 1);
  }
  return text.slice(open);
}

/** Code literals in the arguments of super(...) calls of a class body. */
function superCodes(body) {
  const codes = new Set();
  const re = /super\(/g;
  for (let m = re.exec(body); m !== null; m = re.exec(body)) {
    let depth = 1;
    let i = m.index + m[0].length;
    for (; i < body.length && depth > 0; i++) {
      if (body[i] === '(') depth++;
      else if (body[i] === ')') depth--;
    }
    for (const lit of body.slice(m.index, i).matchAll(/'(ERR_[A-Z0-9_]+)'/g)) codes.add(lit[1]);
  }
  return [...codes];
}

/** The first string literal after `from` on the same line that reads as a sentence (has a space), or ''. */
function messageAfter(line, from) {
  for (const m of line.slice(from).matchAll(/'([^']*)'|`([^`]*)`/g)) {
    const s = (m[1] ?? m[2]).replace(/\$\{[^}]*\}/g, '…');
    if (s.includes(' ') && !CODE.test(s)) return s;
  }
  return '';
}

/**
 * Everything the catalog says, read from the sources:
 * { classes: [{ name, parent, pkg, file, doc, codes }], inline: [{ code, cls, pkg, file, message }],
 *   answers: [{ code, pkg, file, message }] }.
 */
function collect() {
  const files = [];
  for (const dir of PACKAGES) {
    const pkg = JSON.parse(readFileSync(join(ROOT, dir, 'package.json'), 'utf8')).name;
    for (const file of sourceFiles(join(ROOT, dir, 'src'))) files.push({ file: relative(ROOT, file), pkg, text: readFileSync(file, 'utf8') });
  }
  const declared = new Map();
  for (const f of files) {
    for (const m of f.text.matchAll(/export class (\w+) extends (\w+)[^{]*\{/g)) {
      const body = bodyFrom(f.text, m.index + m[0].length - 1);
      declared.set(m[1], {
        name: m[1],
        parent: m[2],
        pkg: f.pkg,
        file: f.file,
        doc: docBefore(f.text, m.index),
        codes: superCodes(body),
        start: m.index,
        end: m.index + m[0].length - 1 + body.length,
      });
    }
    const base = f.text.match(/export class (ApmError) extends Error \{/);
    if (base !== null)
      declared.set('ApmError', {
        name: 'ApmError',
        parent: 'Error',
        pkg: f.pkg,
        file: f.file,
        doc: docBefore(f.text, base.index),
        codes: [],
        start: 0,
        end: 0,
      });
  }
  const inFamily = (name) => {
    for (let c = declared.get(name), hops = 0; c !== undefined && hops < 20; c = declared.get(c.parent), hops++) if (c.name === 'ApmError') return true;
    return false;
  };
  const classes = [...declared.values()].filter((c) => inFamily(c.name));
  const family = new Set(classes.map((c) => c.name));
  const classCodes = new Set(classes.flatMap((c) => c.codes));

  const inline = [];
  const answers = [];
  for (const f of files) {
    const own = classes.filter((c) => c.file === f.file);
    const lines = f.text.split('\n');
    let offset = 0;
    for (const line of lines) {
      const lineStart = offset;
      offset += line.length + 1;
      if (/^\s*(\*|\/\/|\/\*)/.test(line)) continue;
      for (const m of line.matchAll(/'(ERR_[A-Z0-9_]+)'/g)) {
        const at = lineStart + m.index;
        if (own.some((c) => at > c.start && at < c.end)) continue;
        const call = f.text.slice(Math.max(0, at - 200), at).match(/new (\w+)\(\s*$/);
        if (call !== null && family.has(call[1]))
          inline.push({ code: m[1], cls: call[1], pkg: f.pkg, file: f.file, message: messageAfter(line, m.index + m[0].length) });
        else if (!classCodes.has(m[1])) {
          // Two codes on one line are a choice between them; the messages next to them cannot be told apart.
          const oneCode = new Set([...line.matchAll(/'(ERR_[A-Z0-9_]+)'/g)].map((x) => x[1])).size === 1;
          answers.push({ code: m[1], pkg: f.pkg, file: f.file, message: oneCode ? messageAfter(line, m.index + m[0].length) : '' });
        }
      }
    }
  }
  const inlineCodes = new Set(inline.map((i) => i.code));
  return { classes, inline, answers: answers.filter((a) => !inlineCodes.has(a.code)) };
}

/** Text safe inside a Markdown table cell. */
const cell = (s) => String(s).replace(/\|/g, '\\|').replace(/\n/g, ' ');

function render({ classes, inline, answers }) {
  const byCode = (a, b) => (a.code < b.code ? -1 : a.code > b.code ? 1 : 0);
  const raised = [];
  for (const c of classes) for (const code of c.codes) raised.push({ code, cls: c.name, pkg: c.pkg, meaning: c.doc });
  const seen = new Set(raised.map((r) => `${r.code} ${r.cls}`));
  for (const i of inline) {
    if (seen.has(`${i.code} ${i.cls}`)) continue;
    seen.add(`${i.code} ${i.cls}`);
    raised.push({ code: i.code, cls: i.cls, pkg: i.pkg, meaning: i.message === '' ? `raised in ${i.file}` : `“${i.message}”` });
  }
  raised.sort(byCode);
  const bases = classes.filter((c) => c.codes.length === 0).sort((a, b) => (a.name < b.name ? -1 : 1));
  const answered = new Map();
  for (const a of [...answers].sort(byCode)) {
    const prev = answered.get(a.code);
    if (prev === undefined) answered.set(a.code, { ...a, files: new Set([a.file]) });
    else {
      prev.files.add(a.file);
      if (prev.message === '') prev.message = a.message;
    }
  }
  const out = [
    '# Error codes',
    '',
    'Generated by `node docs/gen-errors.js` from the sources; do not edit by hand (`test/unit/error-catalog.test.ts` fails when it is out of date).',
    '',
    'Every error the product raises is an `ApmError` (from `@apm-sidecar/proto`) or a subclass of it, with a stable `code`:',
    'programs and tests match on the code, the message is for people and may change.',
    '',
    '## Raised errors',
    '',
    '| Code | Class | Package | Meaning |',
    '|---|---|---|---|',
    ...raised.map((r) => `| \`${r.code}\` | \`${r.cls}\` | ${r.pkg} | ${cell(r.meaning)} |`),
    '',
    '## Classes without a code of their own',
    '',
    'Bases of the rows above, and errors that carry a code from elsewhere (the other side, the system).',
    '',
    '| Class | Package | Meaning |',
    '|---|---|---|',
    ...bases.map((c) => `| \`${c.name}\` | ${c.pkg} | ${cell(c.doc)} |`),
    '',
    '## Codes in answers and logs',
    '',
    'Codes written into an HTTP error body (`{"error":{"code","message"}}`), an upstream Error message or a log line without an error object.',
    '',
    '| Code | Where | Message |',
    '|---|---|---|',
    ...[...answered.values()].map((a) => `| \`${a.code}\` | ${[...a.files].map((f) => `\`${f}\``).join(', ')} | ${cell(a.message)} |`),
    '',
  ];
  return out.join('\n');
}

/** The codes docs/errors.md (or `text`) lists, from the first column of its tables. */
function codesInDoc(text) {
  return new Set([...text.matchAll(/^\| `(ERR_[A-Z0-9_]+)` \|/gm)].map((m) => m[1]));
}

/** The codes the sources define, raise or answer with. */
function codesInCode(catalog) {
  return new Set([...catalog.classes.flatMap((c) => c.codes), ...catalog.inline.map((i) => i.code), ...catalog.answers.map((a) => a.code)]);
}

module.exports = { collect, render, codesInDoc, codesInCode, DOC: join(ROOT, 'docs', 'errors.md') };

if (require.main === module) {
  const text = render(collect());
  if (process.argv[2] === '--stdout') process.stdout.write(text);
  else if (process.argv[2] === undefined) writeFileSync(module.exports.DOC, text);
  else {
    process.stderr.write('usage: node docs/gen-errors.js [--stdout]\n');
    process.exit(2);
  }
}
