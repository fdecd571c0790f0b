// One chart per metric name, drawn as inline SVG.
import { $, el, svg } from './dom.js';
import { fmtClock, fmtDuration, fmtNum, tagText } from './format.js';
import { AGENT, POINT_LIMIT, PROJECT, WINDOW_MS } from './options.js';
import { chosenSeries, renderPicker } from './series-picker.js';
import { unitOf, withUnit } from './units.js';

const MAX_HIST_SERIES = 4;
const MAX_SERIES = 8;
const QUANTILES = [
  ['p50', '#1f6feb'],
  ['p95', '#d97706'],
  ['p99', '#c0262d'],
];
const PALETTE = ['#1f6feb', '#d97706', '#2da44e', '#c0262d', '#8250df', '#0a7f86', '#bf3989', '#6e7781'];
const DASHES = ['', '6 3', '2 3', '8 3 2 3'];

const charts = new Map();
/** The last points of each metric, for a redraw when the user picks other series. */
const latest = new Map();

/** How a series is named in a picker: its agent and tags. */
const seriesLabel = (s) => [s.who, s.tags].filter(Boolean).join(' ');

/** Group points by metric name, then by series (project + agent + tags). */
function groupPoints(points) {
  const byName = new Map();
  for (const p of points) {
    let m = byName.get(p.name);
    if (m === undefined) {
      m = { name: p.name, kind: p.kind, series: new Map() };
      byName.set(p.name, m);
    }
    const tags = tagText(p.tags);
    const key = `${p.agentId}\u0000${p.project}\u0000${tags}`;
    let s = m.series.get(key);
    if (s === undefined) {
      s = { key, agentId: p.agentId, project: p.project, who: p.agentId, tags, points: [] };
      m.series.set(key, s);
    }
    s.points.push(p);
  }
  for (const m of byName.values()) {
    m.series = new Map([...m.series].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
    // An agent id used in two projects is two agents: name them with their project.
    const projects = new Map();
    for (const s of m.series.values()) projects.set(s.agentId, (projects.get(s.agentId) || new Set()).add(s.project));
    for (const s of m.series.values()) if (projects.get(s.agentId).size > 1) s.who = `${s.agentId} (${s.project})`;
  }
  return byName;
}

/** 1-2-5 steps: about `n` ticks over [lo, hi]. */
function niceTicks(lo, hi, n) {
  if (!(hi > lo)) hi = lo + 1;
  const raw = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((f) => f * mag).find((s) => s >= raw) || 10 * mag;
  const start = Math.floor(lo / step) * step;
  const end = Math.ceil(hi / step) * step;
  const ticks = [];
  for (let v = start; v <= end + step / 2; v += step) ticks.push(+v.toPrecision(12));
  return ticks;
}

const TIME_STEPS = [0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400].map((s) => s * 1000);
function timeTicks(lo, hi, n) {
  const step = TIME_STEPS.find((s) => (hi - lo) / s <= n) || TIME_STEPS[TIME_STEPS.length - 1];
  const tz = new Date(lo).getTimezoneOffset() * 60000;
  const ticks = [];
  for (let t = Math.ceil((lo - tz) / step) * step + tz; t <= hi; t += step) ticks.push(t);
  return { ticks, step };
}

/** The lines of one metric: [{ label, color, dash, quantile?, pts: [[ts, v]...], gap }]. */
function linesOf(m) {
  const cap = m.kind === 'histogram' ? MAX_HIST_SERIES : MAX_SERIES;
  const chosen = chosenSeries(m, cap);
  const all = [...m.series.values()];
  const series = all.filter((s) => chosen.has(s.key));
  const multi = all.length > 1;
  // Name a series by what tells it apart: the agent, the tags, or both.
  const byAgent = new Set(series.map((s) => s.who)).size > 1;
  const byTags = new Set(series.map((s) => s.tags)).size > 1;
  const lines = [];
  series.forEach((s, i) => {
    const who = multi ? ` ${[byAgent ? s.who : '', byTags ? s.tags : ''].filter(Boolean).join(' ') || s.who}` : '';
    const gap = 2.5 * Math.max(...s.points.map((p) => p.intervalMs || 0), 1000);
    if (m.kind === 'histogram') {
      for (const [q, color] of QUANTILES) {
        lines.push({ label: `${q}${who}`, color, dash: DASHES[i % DASHES.length], quantile: q, gap, pts: s.points.map((p) => [p.ts, p[q]]) });
      }
    } else {
      const label = multi ? who.trim() : m.kind === 'counter' ? 'sum per interval' : 'value';
      const pick = m.kind === 'gauge' ? (p) => p.value ?? null : (p) => p.sum;
      lines.push({ label, color: PALETTE[i % PALETTE.length], dash: '', gap, pts: s.points.map((p) => [p.ts, pick(p)]) });
    }
  });
  return lines;
}

function latestText(m) {
  const s = m.series.values().next().value;
  const p = s.points[s.points.length - 1];
  const who = m.series.size > 1 ? ` (${seriesLabel(s)})` : '';
  const u = (v) => withUnit(fmtNum(v), unitOf(m.name));
  if (m.kind === 'histogram') return `latest${who}: p50 ${u(p.p50)} · p95 ${u(p.p95)} · p99 ${u(p.p99)} · n=${fmtNum(p.count)}`;
  if (m.kind === 'counter') return `latest${who}: ${u(p.sum)} per ${fmtDuration(p.intervalMs)}`;
  return `latest${who}: ${u(p.value ?? null)}`;
}

/** Draw one chart: axes, grid, tick labels, legend and one path per line. */
function drawChart(m, lines) {
  const W = 560;
  const PLOT_H = 170;
  const left = 52;
  const right = 12;
  // Legend rows on top, laid out by an estimate of the text width.
  const legendItems = [];
  let lx = left;
  let row = 0;
  for (const line of lines) {
    const w = 26 + line.label.length * 6.2 + 14;
    if (lx + w > W - right && lx > left) {
      lx = left;
      row += 1;
    }
    legendItems.push({ line, x: lx, row });
    lx += w;
  }
  const top = 10 + (row + 1) * 16 + 8;
  const bottom = top + PLOT_H;
  const H = bottom + 24;
  const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', preserveAspectRatio: 'xMinYMin meet' });

  let t0 = Number.POSITIVE_INFINITY;
  let t1 = Number.NEGATIVE_INFINITY;
  let y0 = Number.POSITIVE_INFINITY;
  let y1 = Number.NEGATIVE_INFINITY;
  for (const l of lines) {
    for (const [t, v] of l.pts) {
      t0 = Math.min(t0, t);
      t1 = Math.max(t1, t);
      if (v !== null && Number.isFinite(v)) {
        y0 = Math.min(y0, v);
        y1 = Math.max(y1, v);
      }
    }
  }
  if (!(t1 > t0)) {
    t0 -= 30000;
    t1 += 30000;
  }
  if (!Number.isFinite(y0)) {
    y0 = 0;
    y1 = 1;
  }
  y0 = Math.min(0, y0);
  if (!(y1 > y0)) y1 = y0 + 1;
  const yt = niceTicks(y0, y1, 4);
  const ylo = yt[0];
  const yhi = yt[yt.length - 1];
  const x = (t) => left + ((t - t0) / (t1 - t0)) * (W - left - right);
  const y = (v) => bottom - ((v - ylo) / (yhi - ylo)) * (bottom - top);

  const grid = svg('g', { class: 'grid-lines' });
  const labels = svg('g', { class: 'tick-labels' });
  for (const v of yt) {
    grid.append(svg('line', { class: 'grid', x1: left, x2: W - right, y1: y(v).toFixed(1), y2: y(v).toFixed(1) }));
    labels.append(svg('text', { x: left - 6, y: (y(v) + 4).toFixed(1), 'text-anchor': 'end' }, fmtNum(v)));
  }
  const { ticks, step } = timeTicks(t0, t1, 5);
  for (const t of ticks) {
    grid.append(svg('line', { class: 'grid', x1: x(t).toFixed(1), x2: x(t).toFixed(1), y1: top, y2: bottom }));
    labels.append(svg('text', { x: x(t).toFixed(1), y: bottom + 16, 'text-anchor': 'middle' }, fmtClock(t, step)));
  }
  root.append(grid);
  root.append(svg('line', { class: 'axis', x1: left, x2: left, y1: top, y2: bottom }));
  root.append(svg('line', { class: 'axis', x1: left, x2: W - right, y1: bottom, y2: bottom }));
  root.append(labels);
  const unit = unitOf(m.name);
  if (unit !== '') root.append(svg('text', { class: 'unit', x: left - 6, y: top - 6, 'text-anchor': 'end' }, unit));

  const plot = svg('g', { class: 'lines' });
  for (const l of lines) {
    let d = '';
    let prev = null;
    for (const [t, v] of l.pts) {
      if (v === null || !Number.isFinite(v)) {
        prev = null;
        continue;
      }
      const cmd = prev === null || t - prev > l.gap ? 'M' : 'L';
      d += `${cmd}${x(t).toFixed(1)} ${y(v).toFixed(1)}`;
      // A lone point still shows: a zero-length segment with round caps is a dot.
      if (cmd === 'M') d += 'l0 0';
      prev = t;
    }
    const path = svg('path', { class: `line${l.quantile ? ` line-${l.quantile}` : ''}`, d, stroke: l.color });
    if (l.dash) path.setAttribute('stroke-dasharray', l.dash);
    if (l.quantile) path.dataset.quantile = l.quantile;
    path.append(svg('title', {}, l.label));
    plot.append(path);
  }
  root.append(plot);

  const legend = svg('g', { class: 'legend' });
  for (const { line, x: ix, row: r } of legendItems) {
    const cy = 10 + r * 16 + 6;
    const sw = svg('line', { x1: ix, x2: ix + 20, y1: cy, y2: cy, stroke: line.color, 'stroke-width': 2.5 });
    if (line.dash) sw.setAttribute('stroke-dasharray', line.dash);
    legend.append(sw, svg('text', { x: ix + 26, y: cy + 4 }, line.label));
  }
  root.append(legend);

  const what = m.kind === 'histogram' ? 'p50, p95 and p99' : m.kind === 'counter' ? 'the sum per interval' : 'the value';
  const label = `${m.name}: ${what} from ${fmtClock(t0)} to ${fmtClock(t1)}; ${latestText(m)}`;
  root.setAttribute('aria-label', label);
  root.prepend(svg('title', {}, label));
  return root;
}

/** (Re)draw one metric's figure: caption, series picker and chart. */
function drawFigure(fig, m) {
  fig.dataset.kind = m.kind;
  const cap = fig.firstChild;
  cap.querySelector('.metric-kind').textContent = m.kind;
  const unit = unitOf(m.name);
  cap.querySelector('.metric-unit').textContent = unit === '' ? '' : `in ${unit}`;
  cap.querySelector('.metric-latest').textContent = latestText(m);
  const lines = linesOf(m);
  renderPicker(cap, m, seriesLabel, () => drawFigure(fig, latest.get(m.name) ?? m));
  const old = fig.querySelector('svg');
  const chart = drawChart(m, lines);
  if (old) old.replaceWith(chart);
  else fig.append(chart);
}

export function renderCharts(points) {
  const box = $('charts');
  const byName = groupPoints(points);
  const names = [...byName.keys()].sort();
  for (const [name, fig] of charts) {
    if (!byName.has(name)) {
      fig.remove();
      charts.delete(name);
    }
  }
  names.forEach((name, i) => {
    const m = byName.get(name);
    latest.set(name, m);
    let fig = charts.get(name);
    if (fig === undefined) {
      fig = el('figure', { class: 'chart' });
      fig.dataset.metric = name;
      const cap = el('figcaption');
      cap.append(
        el('span', { class: 'metric-name' }, name),
        el('span', { class: 'metric-kind' }),
        el('span', { class: 'metric-unit' }),
        el('span', { class: 'metric-latest' }),
      );
      fig.append(cap);
      charts.set(name, fig);
    }
    drawFigure(fig, m);
    if (box.children[i] !== fig) box.insertBefore(fig, box.children[i] || null);
  });
  for (const name of latest.keys()) if (!byName.has(name)) latest.delete(name);
  const empty = $('metrics-empty');
  empty.hidden = names.length > 0;
  const scope = `${AGENT ? ` agent ${AGENT}` : ''}${PROJECT ? ` project ${PROJECT}` : ''}`;
  empty.textContent = `No metric points in the last ${fmtDuration(WINDOW_MS)}${scope ? ` for${scope}` : ''}.`;
  const truncated = points.length >= POINT_LIMIT ? ` (the most recent ${POINT_LIMIT} points)` : '';
  $('metrics-summary').textContent =
    `last ${fmtDuration(WINDOW_MS)}${scope ? `,${scope}` : ''}: ${names.length} metric${names.length === 1 ? '' : 's'}, ${points.length} points${truncated}`;
}

/** How many charts are drawn. */
export const chartsShown = () => charts.size;
