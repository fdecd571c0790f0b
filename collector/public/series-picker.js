// Which series of a chart are drawn: the first few by default, any set the user picks.
import { el } from './dom.js';

/** Metric name → { chosen: Set of series keys, touched: whether the user picked }. */
const picks = new Map();

/** The keys of `m`'s series to draw: the first `cap` until the user picks. */
export function chosenSeries(m, cap) {
  let p = picks.get(m.name);
  if (p === undefined) {
    p = { chosen: new Set(), touched: false };
    picks.set(m.name, p);
  }
  if (!p.touched) p.chosen = new Set([...m.series.keys()].slice(0, cap));
  return p.chosen;
}

/** The picker in a chart's caption, for more than one series; `redraw()` after each change. */
export function renderPicker(cap, m, label, redraw) {
  let box = cap.querySelector('.series-picker');
  if (m.series.size < 2) {
    box?.remove();
    return;
  }
  const p = picks.get(m.name);
  if (box === null) {
    box = el('details', { class: 'series-picker' });
    box.append(el('summary'), el('div', { class: 'series-list' }));
    cap.append(box);
  }
  const list = box.querySelector('.series-list');
  const keys = [...m.series.keys()];
  const have = [...list.querySelectorAll('input')].map((i) => i.value);
  if (have.join('\n') !== keys.join('\n')) {
    list.replaceChildren(
      ...keys.map((k) => {
        const input = el('input', { type: 'checkbox', value: k });
        input.addEventListener('change', () => {
          p.touched = true;
          if (input.checked) p.chosen.add(k);
          else p.chosen.delete(k);
          redraw();
        });
        const item = el('label', { class: 'series-choice' });
        item.append(input, ` ${label(m.series.get(k))}`);
        return item;
      }),
    );
  }
  for (const input of list.querySelectorAll('input')) input.checked = p.chosen.has(input.value);
  const drawn = keys.filter((k) => p.chosen.has(k)).length;
  box.querySelector('summary').textContent = `${keys.length} series, ${drawn} drawn: choose`;
}
