// Recent transactions; one transaction's steps as a waterfall; the parts of the same
// distributed trace recorded by other agents (found by trace id), each one click away.
import { getJson } from './api.js';
import { $, el, svg } from './dom.js';
import { fmtClock, fmtNum } from './format.js';
import { agentOf, fillTable } from './table.js';

let shown = null;
const txKey = (t) => `${t.project}\u0000${t.agentId}\u0000${t.txid}`;

export function renderTraces(traces) {
  const rows = fillTable(
    'traces',
    traces,
    (t) => {
      const open = el('button', { type: 'button', class: 'link' }, t.name);
      open.addEventListener('click', () => showTrace(t));
      return [fmtClock(t.startTime), agentOf(t), t.app || '–', open, `${fmtNum(t.durationMs)} ms`, t.error || ''];
    },
    'No transactions yet: the shim sends one per startTransaction() … end().',
  );
  rows.forEach((tr, i) => {
    const t = traces[i];
    tr.className = t.error ? 'trace trace-error' : 'trace';
    tr.dataset.txid = t.txid;
    if (shown !== null && txKey(shown) === txKey(t)) tr.classList.add('selected');
  });
  $('traces-summary').textContent = traces.length === 0 ? '' : `the ${traces.length} most recent`;
}

/** The waterfall: the transaction on the first row, then each step at its offset. */
function waterfall(t) {
  const steps = Array.isArray(t.trace?.steps) ? t.trace.steps : [];
  const total = Math.max(t.durationMs, ...steps.map((s) => (s.offsetMs || 0) + (s.durationMs || 0)), 0.001);
  const W = 760;
  const labelW = 300;
  const plotW = W - labelW - 70;
  const rowH = 20;
  const items = [{ label: t.name, offsetMs: 0, durationMs: t.durationMs, cls: 'bar bar-tx' }].concat(
    steps.map((s) => ({
      label: `${s.type}: ${s.text}`,
      offsetMs: s.offsetMs || 0,
      durationMs: s.durationMs || 0,
      cls: `bar bar-${String(s.type).replace(/[^a-z0-9-]/gi, '')}`,
    })),
  );
  const root = svg('svg', { viewBox: `0 0 ${W} ${items.length * rowH + 8}`, role: 'img', class: 'waterfall' });
  root.setAttribute('aria-label', `${t.name}: ${steps.length} steps over ${fmtNum(t.durationMs)} ms`);
  items.forEach((it, i) => {
    const y = 4 + i * rowH;
    const g = svg('g', { class: 'step' });
    const text = it.label.length > 48 ? `${it.label.slice(0, 47)}…` : it.label;
    g.append(svg('text', { x: 0, y: y + 14 }, text));
    const x = labelW + (it.offsetMs / total) * plotW;
    const w = Math.max(1.5, (it.durationMs / total) * plotW);
    g.append(svg('rect', { class: it.cls, x: x.toFixed(1), y: y + 3, width: w.toFixed(1), height: rowH - 6, rx: 2 }));
    g.append(svg('text', { class: 'ms', x: (x + w + 4).toFixed(1), y: y + 14 }, `${fmtNum(it.durationMs)} ms`));
    g.append(svg('title', {}, `${it.label}\nat +${fmtNum(it.offsetMs)} ms for ${fmtNum(it.durationMs)} ms`));
    root.append(g);
  });
  return root;
}

function renderParts(parts, t) {
  const list = el('ol', { class: 'trace-parts' });
  for (const p of [...parts].sort((a, b) => a.startTime - b.startTime)) {
    const item = el('li');
    const text = `${agentOf(p)} · ${p.app || '–'} · ${p.name} · ${fmtNum(p.durationMs)} ms · ${fmtClock(p.startTime, 1)}`;
    if (txKey(p) === txKey(t)) item.append(el('strong', {}, `${text} (shown)`));
    else {
      const open = el('button', { type: 'button', class: 'link' }, text);
      open.addEventListener('click', () => showTrace(p));
      item.append(open);
    }
    list.append(item);
  }
  $('trace-parts').replaceChildren(el('p', { class: 'hint' }, `${parts.length} part${parts.length === 1 ? '' : 's'} of trace ${t.traceId}:`), list);
}

export async function showTrace(t) {
  shown = t;
  const box = $('trace-detail');
  box.hidden = false;
  box.dataset.txid = t.txid;
  $('trace-title').textContent = `${t.name} · ${fmtNum(t.durationMs)} ms · ${agentOf(t)} · ${t.app || '–'}${t.error ? ` · error: ${t.error}` : ''}`;
  $('trace-waterfall').replaceChildren(waterfall(t));
  for (const tr of $('traces').tBodies[0].rows) tr.classList.toggle('selected', tr.dataset.txid === t.txid);
  const parts = $('trace-parts');
  if (!/^[0-9a-f]{32}$/.test(t.traceId)) {
    parts.textContent = '';
    return;
  }
  parts.textContent = 'Looking for the other parts of this trace…';
  try {
    const found = await getJson(`/api/traces?${new URLSearchParams({ traceId: t.traceId, limit: '100' })}`);
    if (shown === t) renderParts(found, t);
  } catch (err) {
    if (shown === t) parts.textContent = `The other parts could not be loaded: ${err.message}`;
  }
}
