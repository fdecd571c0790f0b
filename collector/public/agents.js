// The agents table: one row per (project, agent id), kept across refreshes.
import { $, el } from './dom.js';
import { fmtAgo } from './format.js';

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

export function renderAgents(agents) {
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
  $('agents-summary').textContent = agents.length === 0 ? '' : `${agents.length} in all: ${n.live} live, ${n.stalled} stalled, ${n.disconnected} disconnected`;
}

/** How many agents the table shows. */
export const agentsShown = () => rows.size;
