'use strict';
/**
 * Prints a few packs from the debug transport's JSON-lines output, pretty, and a
 * count of packs by kind:
 *
 *   apm-sidecar run --transport debug --set debug_output=PACKS.jsonl
 *   node examples/show-packs.js PACKS.jsonl
 */
const { readFileSync } = require('node:fs');

const file = process.argv[2];
if (file === undefined) {
  process.stderr.write('usage: node examples/show-packs.js PACKS.jsonl\n');
  process.exit(2);
}

const packs = [];
let bad = 0;
for (const line of readFileSync(file, 'utf8').split('\n')) {
  if (line.trim() === '') continue;
  try {
    packs.push(JSON.parse(line));
  } catch {
    bad++;
  }
}

const show = (title, value) => {
  process.stdout.write(`\n--- ${title}\n${JSON.stringify(value, null, 2)}\n`);
};

// A metrics pack: a few of its points (a histogram, a counter, a gauge when present).
const metrics = packs.filter((p) => p.pack === 'metrics');
const richest = metrics.reduce((a, b) => (b.points.length > (a?.points.length ?? -1) ? b : a), undefined);
if (richest !== undefined) {
  const find = (f) => richest.points.find(f);
  const sample = [
    find((x) => x.name === 'http.server.duration' && x.tags.route === '/pay') ?? find((x) => x.type === 'histogram'),
    find((x) => x.name === 'orders.created') ?? find((x) => x.type === 'counter'),
    find((x) => x.type === 'gauge'),
  ].filter((x) => x !== undefined);
  show(`metrics pack (${richest.points.length} points; ${sample.length} shown)`, { ...richest, points: sample });
}

// A trace of GET /pay and the downstream trace of the /inventory call it made.
const traces = packs.filter((p) => p.pack === 'trace');
const pay = traces.find((p) => p.trace.name === 'GET /pay' && p.trace.error === undefined);
if (pay !== undefined) {
  show('trace (ProfilePack) of GET /pay', pay);
  const child = traces.find((p) => p.trace.parentSpanId === pay.trace.spanId);
  if (child !== undefined) {
    process.stdout.write(
      `\n    its outgoing call became trace "${child.trace.name}" with the same traceId ${child.trace.traceId === pay.trace.traceId ? '(yes)' : '(NO)'}` +
        ` and parentSpanId ${child.trace.parentSpanId} = the /pay spanId\n`,
    );
  }
}
const failed = traces.find((p) => p.trace.error !== undefined);
if (failed !== undefined) process.stdout.write(`\n--- a failed trace: ${failed.trace.name} error=${JSON.stringify(failed.trace.error)}\n`);

const first = (kind) => packs.find((p) => p.pack === kind);
const deploy = packs.find((p) => p.pack === 'event' && p.event.type === 'deploy') ?? first('event');
if (deploy !== undefined) show('event', deploy);
const stack = first('activeStack');
if (stack !== undefined) show('active stack (ActiveStackPack) of a running GET /slow', stack);
const snap = first('snapshot');
if (snap !== undefined) show('snapshot', snap);

const counts = {};
for (const p of packs) counts[p.pack] = (counts[p.pack] ?? 0) + 1;
const points = metrics.reduce((n, p) => n + p.points.length, 0);
process.stdout.write(`\n--- packs by kind (${packs.length} in all${bad > 0 ? `, ${bad} unreadable lines` : ''})\n`);
for (const [kind, n] of Object.entries(counts).sort((a, b) => b[1] - a[1])) {
  process.stdout.write(`  ${kind.padEnd(15)} ${String(n).padStart(6)}${kind === 'metrics' ? `   (${points} points)` : ''}\n`);
}
