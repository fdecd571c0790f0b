'use strict';
// The collector's web page: the agents table and one chart per metric name, drawn as
// inline SVG, refreshed by polling the JSON API. No framework, no network beyond this origin.
// Options in the query string: refresh=ms (poll period), window=ms (metrics shown), agent=ID, project=ID.
// An agent is (project, agent id): two projects may use the same agent id, so both are shown.
(() => {
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const params = new URLSearchParams(location.search);
  const intParam = (name, def, min, max) => {
    const v = Number(params.get(name));
    return params.has(name) && Number.isFinite(v) ? Math.min(max, Math.max(min, Math.round(v))) : def;
  };
  const REFRESH_MS = intParam('refresh', 1000, 100, 3_600_000);
  const WINDOW_MS = intParam('window', 600_000, 5_000, 7 * 86_400_000);
  const AGENT = params.get('agent') || '';
  const PROJECT = params.get('project') || '';
  const POINT_LIMIT = 5000;
  const MAX_HIST_SERIES = 4;
  const MAX_SERIES = 8;
  const QUANTILES = [
    ['p50', '#1f6feb'],
    ['p95', '#d97706'],
    ['p99', '#c0262d'],
  ];
  const PALETTE = ['#1f6feb', '#d97706', '#2da44e', '#c0262d', '#8250df', '#0a7f86', '#bf3989', '#6e7781'];
  const DASHES = ['', '6 3', '2 3', '8 3 2 3'];

  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs = {}, text) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const svg = (tag, attrs = {}, text) => {
    const e = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  };

  // The collector's clock, from the Date header: the page's own clock may be off.
  let clockOffset = 0;
  const serverNow = () => Date.now() + clockOffset;

  class ApiError extends Error {}
  /** The API answered 401: no read token, or one it does not accept. */
  class AuthError extends ApiError {}

  // The read token, asked for once and kept for this tab only (sessionStorage), sent on every API call.
  const TOKEN_KEY = 'apm-collector-token';
  // Where storage is disabled the token lives as long as this page.
  let pageToken = '';
  const readToken = () => {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || pageToken;
    } catch {
      return pageToken;
    }
  };

  async function getJson(path) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), Math.max(5000, REFRESH_MS * 3));
    const headers = { accept: 'application/json' };
    const token = readToken();
    if (token) headers.authorization = `Bearer ${token}`;
    let res;
    try {
      res = await fetch(path, { cache: 'no-store', signal: ctl.signal, headers });
    } catch (err) {
      throw new ApiError(err.name === 'AbortError' ? 'no answer in time' : `cannot reach the collector (${err.message})`);
    } finally {
      clearTimeout(timer);
    }
    const date = Date.parse(res.headers.get('date') || '');
    if (Number.isFinite(date)) {
      const off = date - Date.now();
      clockOffset = Math.abs(off) > 5000 ? off : 0;
    }
    let body;
    try {
      body = await res.json();
    } catch {
      throw new ApiError(`HTTP ${res.status}: the answer is not JSON`);
    }
    if (!res.ok) {
      const e = body?.error;
      if (res.status === 401) throw new AuthError(e ? e.message : 'a read token is required');
      throw new ApiError(e ? `HTTP ${res.status} ${e.code}: ${e.message}` : `HTTP ${res.status}`);
    }
    return body;
  }

  // ---- formatting ----
  function fmtNum(v) {
    if (v === null || v === undefined || !Number.isFinite(v)) return '–';
    const a = Math.abs(v);
    if (a >= 1e9) return `${+(v / 1e9).toPrecision(3)}G`;
    if (a >= 1e6) return `${+(v / 1e6).toPrecision(3)}M`;
    if (a >= 1e4) return `${+(v / 1e3).toPrecision(3)}k`;
    if (Number.isInteger(v)) return String(v);
    return String(+v.toPrecision(3));
  }
  const pad2 = (n) => String(n).padStart(2, '0');
  /** HH:MM, HH:MM:SS or HH:MM:SS.f by the precision asked for (ms of a tick step). */
  function fmtClock(ms, precision = 1000) {
    const d = new Date(ms);
    const hm = `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
    if (precision >= 60000) return hm;
    const sec = `${hm}:${pad2(d.getSeconds())}`;
    return precision >= 1000
      ? sec
      : `${sec}.${String(d.getMilliseconds())
          .padStart(3, '0')
          .slice(0, precision >= 100 ? 1 : 2)}`;
  }
  function fmtAgo(ms) {
    const s = Math.max(0, Math.round((serverNow() - ms) / 1000));
    if (s < 2) return 'just now';
    if (s < 120) return `${s} s ago`;
    if (s < 7200) return `${Math.round(s / 60)} min ago`;
    if (s < 172800) return `${Math.round(s / 3600)} h ago`;
    return new Date(ms).toLocaleString();
  }
  const fmtDuration = (ms) => (ms % 60000 === 0 ? `${ms / 60000} min` : ms % 1000 === 0 ? `${ms / 1000} s` : `${ms} ms`);
  const tagText = (tags) =>
    Object.keys(tags || {})
      .sort()
      .map((k) => `${k}=${tags[k]}`)
      .join(' ');

  // ---- agents ----
  const STATE_TEXT = { live: 'live', stalled: 'stalled', disconnected: 'disconnected' };
  const rows = new Map();

  const agentKey = (a) => `${a.project}/${a.agentId}`;

  function agentRow(a) {
    let tr = rows.get(agentKey(a));
    if (tr === undefined) {
      tr = el('tr');
      tr.dataset.agentId = a.agentId;
      tr.dataset.project = a.project;
      for (const cls of ['agent-id', 'agent-project', 'agent-app', 'agent-host', 'agent-state', 'agent-seen', 'agent-licensed'])
        tr.append(el('td', { class: cls }));
      rows.set(agentKey(a), tr);
    }
    const state = Object.hasOwn(STATE_TEXT, a.state) ? a.state : 'disconnected';
    tr.dataset.state = state;
    tr.className = `agent agent-${state}`;
    const [id, project, app, host, st, seen, lic] = tr.cells;
    id.textContent = a.agentId;
    project.textContent = a.project || '–';
    app.textContent = a.app || (Array.isArray(a.apps) ? a.apps.join(', ') : '') || '–';
    app.title = Array.isArray(a.apps) && a.apps.length > 1 ? `apps: ${a.apps.join(', ')}` : '';
    host.textContent = a.host || '–';
    const badge = el('span', { class: `badge badge-${state}` }, STATE_TEXT[state]);
    if (state === 'stalled') badge.title = 'connected, but sending no data';
    if (state === 'disconnected') badge.title = 'the connection is gone; kept listed in case the agent reconnects';
    st.replaceChildren(badge);
    const seenMs = Date.parse(a.lastSeenAt);
    const time = el('time', { datetime: a.lastSeenAt, title: Number.isFinite(seenMs) ? new Date(seenMs).toLocaleString() : '' });
    time.textContent = Number.isFinite(seenMs) ? fmtAgo(seenMs) : '–';
    seen.replaceChildren(time);
    lic.textContent = a.licensed ? 'yes' : 'no';
    lic.className = a.licensed ? 'agent-licensed' : 'agent-licensed unlicensed';
    return tr;
  }

  function renderAgents(agents) {
    const body = $('agents').tBodies[0];
    const seen = new Set(agents.map(agentKey));
    for (const id of rows.keys()) if (!seen.has(id)) rows.delete(id);
    if (agents.length === 0) {
      body.replaceChildren(el('tr', { class: 'placeholder' }));
      body.rows[0].append(
        el('td', { colspan: '7' }, 'No agents yet: start a sidecar with an access key (apm-collector keys create) and point it at this collector.'),
      );
    } else {
      // Append in API order; appending an existing row moves it, so nothing flickers.
      const wanted = agents.map(agentRow);
      if (wanted.length !== body.rows.length || wanted.some((tr, i) => body.rows[i] !== tr)) body.replaceChildren(...wanted);
    }
    const n = { live: 0, stalled: 0, disconnected: 0 };
    for (const a of agents) n[a.state] = (n[a.state] || 0) + 1;
    $('agents-summary').textContent =
      agents.length === 0 ? '' : `${agents.length} in all: ${n.live} live, ${n.stalled} stalled, ${n.disconnected} disconnected`;
  }

  // ---- charts ----
  const charts = new Map();

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
        s = { agentId: p.agentId, project: p.project, who: p.agentId, tags, points: [] };
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
    const series = [...m.series.values()];
    const multi = series.length > 1;
    // Name a series by what tells it apart: the agent, the tags, or both.
    const byAgent = new Set(series.map((s) => s.who)).size > 1;
    const byTags = new Set(series.map((s) => s.tags)).size > 1;
    const lines = [];
    const cap = m.kind === 'histogram' ? MAX_HIST_SERIES : MAX_SERIES;
    series.slice(0, cap).forEach((s, i) => {
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
    return { lines, hidden: Math.max(0, series.length - cap) };
  }

  function latestText(m) {
    const s = m.series.values().next().value;
    const p = s.points[s.points.length - 1];
    const who = m.series.size > 1 ? ` (${s.who})` : '';
    if (m.kind === 'histogram') return `latest${who}: p50 ${fmtNum(p.p50)} · p95 ${fmtNum(p.p95)} · p99 ${fmtNum(p.p99)} · n=${fmtNum(p.count)}`;
    if (m.kind === 'counter') return `latest${who}: ${fmtNum(p.sum)} per ${fmtDuration(p.intervalMs)}`;
    return `latest${who}: ${fmtNum(p.value ?? null)}`;
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

  function renderCharts(points) {
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
      let fig = charts.get(name);
      if (fig === undefined) {
        fig = el('figure', { class: 'chart' });
        fig.dataset.metric = name;
        const cap = el('figcaption');
        cap.append(el('span', { class: 'metric-name' }, name), el('span', { class: 'metric-kind' }), el('span', { class: 'metric-latest' }));
        fig.append(cap);
        charts.set(name, fig);
      }
      fig.dataset.kind = m.kind;
      const cap = fig.firstChild;
      cap.querySelector('.metric-kind').textContent = m.kind;
      cap.querySelector('.metric-latest').textContent = latestText(m);
      const { lines, hidden } = linesOf(m);
      let note = cap.querySelector('.metric-note');
      if (hidden > 0) {
        if (note === null) {
          note = el('span', { class: 'metric-note' });
          cap.append(note);
        }
        note.textContent = `${hidden} more series not drawn (see /api/metrics?name=${name})`;
      } else if (note !== null) note.remove();
      const old = fig.querySelector('svg');
      const chart = drawChart(m, lines);
      if (old) old.replaceWith(chart);
      else fig.append(chart);
      if (box.children[i] !== fig) box.insertBefore(fig, box.children[i] || null);
    });
    const empty = $('metrics-empty');
    empty.hidden = names.length > 0;
    const scope = `${AGENT ? ` agent ${AGENT}` : ''}${PROJECT ? ` project ${PROJECT}` : ''}`;
    empty.textContent = `No metric points in the last ${fmtDuration(WINDOW_MS)}${scope ? ` for${scope}` : ''}.`;
    const truncated = points.length >= POINT_LIMIT ? ` (the most recent ${POINT_LIMIT} points)` : '';
    $('metrics-summary').textContent =
      `last ${fmtDuration(WINDOW_MS)}${scope ? `,${scope}` : ''}: ${names.length} metric${names.length === 1 ? '' : 's'}, ${points.length} points${truncated}`;
  }

  // ---- the loop ----
  let lastOk = 0;

  function metricsPath() {
    const q = new URLSearchParams({ from: String(Math.max(0, Math.floor(serverNow() - WINDOW_MS))), limit: String(POINT_LIMIT) });
    if (AGENT) q.set('agent', AGENT);
    if (PROJECT) q.set('project', PROJECT);
    return `/api/metrics?${q}`;
  }

  // ---- the read token ----
  let waitingForToken = false;

  function askToken(rejected) {
    waitingForToken = true;
    pageToken = '';
    try {
      sessionStorage.removeItem(TOKEN_KEY);
    } catch {
      // storage disabled: the token is asked again on each load
    }
    $('token-note').textContent = rejected
      ? 'The collector did not accept this token (unknown or revoked). Enter a read token.'
      : 'This collector needs a read token (apm-collector tokens create). It is kept in this tab only.';
    $('token-form').hidden = false;
    $('status').className = 'status failing';
    $('status-text').textContent = 'Waiting for a read token';
    $('token-input').focus();
  }

  $('token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const value = $('token-input').value.trim();
    if (!value) return;
    pageToken = value;
    try {
      sessionStorage.setItem(TOKEN_KEY, value);
    } catch {
      // kept nowhere: this load only
    }
    $('token-input').value = '';
    $('token-form').hidden = true;
    if (waitingForToken) {
      waitingForToken = false;
      loop();
    }
  });

  const agentsPath = () => (PROJECT ? `/api/agents?${new URLSearchParams({ project: PROJECT })}` : '/api/agents');

  async function refresh() {
    const hadToken = readToken() !== '';
    const [agents, points, stats] = await Promise.allSettled([getJson(agentsPath()), getJson(metricsPath()), getJson('/api/stats')]);
    if ([agents, points, stats].some((r) => r.status === 'rejected' && r.reason instanceof AuthError)) {
      askToken(hadToken);
      return;
    }
    const errors = [];
    if (agents.status === 'fulfilled') renderAgents(agents.value);
    else errors.push(`Agents: ${agents.reason.message}`);
    if (points.status === 'fulfilled') renderCharts(points.value);
    else errors.push(`Metrics: ${points.reason.message}`);
    if (stats.status === 'rejected') errors.push(`Stats: ${stats.reason.message}`);

    const status = $('status');
    const every = `refresh every ${fmtDuration(REFRESH_MS)}`;
    let text;
    if (errors.length === 0) {
      lastOk = Date.now();
      const s = stats.value;
      const rejected = Object.values(s.rejected || {}).reduce((a, n) => a + n, 0);
      text = `Updated ${fmtClock(lastOk)} · ${every} · ${fmtNum(s.received?.metricPoints ?? 0)} points received · ${fmtNum(s.droppedLate ?? 0)} dropped late · ${fmtNum(rejected)} rejected`;
    } else {
      text = `${lastOk ? `Last update ${fmtClock(lastOk)}` : 'Not loaded yet'} · retrying, ${every}`;
    }
    status.className = `status ${errors.length === 0 ? 'ok' : 'failing'}`;
    $('status-text').textContent = text;
    const box = $('error');
    box.hidden = errors.length === 0;
    const since = lastOk ? ` What is shown is from ${fmtClock(lastOk)}.` : '';
    box.textContent = errors.length === 0 ? '' : `The collector's API did not answer as expected.${since}\n${errors.join('\n')}`;
    if (agents.status === 'rejected' && rows.size === 0) {
      $('agents').tBodies[0].replaceChildren(el('tr', { class: 'placeholder' }));
      $('agents').tBodies[0].rows[0].append(el('td', { colspan: '6' }, 'Agents could not be loaded (see above).'));
    }
    if (points.status === 'rejected' && charts.size === 0) {
      $('metrics-empty').hidden = false;
      $('metrics-empty').textContent = 'Metrics could not be loaded (see above).';
    }
  }

  async function loop() {
    try {
      await refresh();
    } catch (err) {
      // A bug in drawing must not stop the page: show it and go on polling.
      const box = $('error');
      box.hidden = false;
      box.textContent = `The page failed to draw: ${err?.message}`;
    }
    // Polling stops while the page waits for a token; submitting one starts it again.
    if (!waitingForToken) setTimeout(loop, REFRESH_MS);
  }

  loop();
})();
