'use strict';
/**
 * Summarize a .cpuprofile (from `node bench/ingest.js --cpu-prof DIR`): the top
 * functions by self time and by inclusive time, as percentages of all samples.
 *
 *   node bench/tools/profile-summary.js FILE.cpuprofile [top=25]
 */
const { readFileSync } = require('node:fs');

const file = process.argv[2];
const top = Number(process.argv[3] ?? 25);
const p = JSON.parse(readFileSync(file, 'utf8'));
const byId = new Map(p.nodes.map((n) => [n.id, n]));
const parent = new Map();
for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const label = (n) => {
  const f = n.callFrame;
  const url = f.url ? f.url.replace(/^.*\/(proto|sidecar|client-shim|node_modules)\//, '$1/') : '';
  return `${f.functionName || '(anonymous)'} ${url}${url ? `:${f.lineNumber + 1}` : ''}`;
};
const selfT = new Map();
const totalT = new Map();
let all = 0;
p.samples.forEach((id, i) => {
  const dt = p.timeDeltas[i] ?? 0;
  all += dt;
  const n = byId.get(id);
  selfT.set(label(n), (selfT.get(label(n)) ?? 0) + dt);
  const seen = new Set();
  for (let cur = id; cur !== undefined; cur = parent.get(cur)) {
    const k = label(byId.get(cur));
    if (!seen.has(k)) {
      seen.add(k);
      totalT.set(k, (totalT.get(k) ?? 0) + dt);
    }
  }
});
const show = (m) =>
  [...m]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([k, t]) => `${((100 * t) / all).toFixed(1).padStart(5)}%  ${k}`)
    .join('\n');
process.stdout.write(`${file}: ${(all / 1e6).toFixed(2)} s sampled\n\nself time\n${show(selfT)}\n\ninclusive time\n${show(totalT)}\n`);
