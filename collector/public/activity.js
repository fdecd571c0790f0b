// Recent events and snapshots, and the business transactions registered, as tables.
import { el } from './dom.js';
import { fmtClock } from './format.js';
import { agentOf, fillTable } from './table.js';

const MAX_DATA_CHARS = 160;

export function renderEvents(events) {
  fillTable('events', events, (e) => [fmtClock(e.ts), agentOf(e), e.app || '–', e.type, e.message], 'No events yet: apm.event({ type, message }).');
}

export function renderSnapshots(snaps) {
  fillTable(
    'snapshots',
    snaps,
    (s) => {
      const json = JSON.stringify(s.data) ?? '';
      const code = el('code', { title: json.slice(0, 4000) }, json.length > MAX_DATA_CHARS ? `${json.slice(0, MAX_DATA_CHARS - 1)}…` : json);
      return [fmtClock(s.ts), agentOf(s), s.app || '–', s.kind, code];
    },
    'No snapshots yet: apm.snapshot(data, kind).',
  );
}

export function renderRegistrations(regs) {
  fillTable(
    'registrations',
    regs,
    (r) => [agentOf(r), r.app || '–', r.name, new Date(r.firstSeenAt).toLocaleString()],
    'No business transactions registered yet: apm.registerBusinessTransaction(name).',
  );
}
