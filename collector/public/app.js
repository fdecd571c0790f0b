// The collector's web page: the agents table and one chart per metric name, drawn as
// inline SVG, refreshed by polling the JSON API. No framework, no network beyond this origin.
// An agent is (project, agent id): two projects may use the same agent id, so both are shown.
// Options (query string): see options.js.
import { renderEvents, renderRegistrations, renderSnapshots } from './activity.js';
import { agentsShown, renderAgents } from './agents.js';
import { AuthError, forgetToken, getJson, keepToken, readToken } from './api.js';
import { chartsShown, renderCharts } from './charts.js';
import { $, el, serverNow } from './dom.js';
import { fmtClock, fmtDuration, fmtNum } from './format.js';
import { AGENT, POINT_LIMIT, PROJECT, REFRESH_MS, WINDOW_MS } from './options.js';
import { renderTraces } from './traces.js';

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
  forgetToken();
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
  keepToken(value);
  $('token-input').value = '';
  $('token-form').hidden = true;
  if (waitingForToken) {
    waitingForToken = false;
    loop();
  }
});

const agentsPath = () => (PROJECT ? `/api/agents?${new URLSearchParams({ project: PROJECT })}` : '/api/agents');

/** A list route with the page's agent and project filters. */
function listPath(route, limit) {
  const q = new URLSearchParams({ limit: String(limit) });
  if (AGENT) q.set('agent', AGENT);
  if (PROJECT) q.set('project', PROJECT);
  return `${route}?${q}`;
}

/** The lists below the charts: each drawn when it loads, an error line when it does not. */
const LISTS = [
  ['Transactions', () => listPath('/api/traces', 50), renderTraces],
  ['Events', () => listPath('/api/events', 50), renderEvents],
  ['Snapshots', () => listPath('/api/snapshots', 20), renderSnapshots],
  ['Business transactions', () => listPath('/api/registrations', 500), renderRegistrations],
];

async function refresh() {
  const hadToken = readToken() !== '';
  const [agents, points, stats, ...lists] = await Promise.allSettled([
    getJson(agentsPath()),
    getJson(metricsPath()),
    getJson('/api/stats'),
    ...LISTS.map(([, path]) => getJson(path())),
  ]);
  if ([agents, points, stats, ...lists].some((r) => r.status === 'rejected' && r.reason instanceof AuthError)) {
    askToken(hadToken);
    return;
  }
  const errors = [];
  if (agents.status === 'fulfilled') renderAgents(agents.value);
  else errors.push(`Agents: ${agents.reason.message}`);
  if (points.status === 'fulfilled') renderCharts(points.value);
  else errors.push(`Metrics: ${points.reason.message}`);
  if (stats.status === 'rejected') errors.push(`Stats: ${stats.reason.message}`);
  lists.forEach((r, i) => {
    const [what, , render] = LISTS[i];
    if (r.status === 'fulfilled') render(r.value);
    else errors.push(`${what}: ${r.reason.message}`);
  });

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
  if (agents.status === 'rejected' && agentsShown() === 0) {
    $('agents').tBodies[0].replaceChildren(el('tr', { class: 'placeholder' }));
    $('agents').tBodies[0].rows[0].append(el('td', { colspan: '6' }, 'Agents could not be loaded (see above).'));
  }
  if (points.status === 'rejected' && chartsShown() === 0) {
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
