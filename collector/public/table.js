// Filling the page's simple tables: one row per item, a placeholder row when there is none.
import { $, el } from './dom.js';

/** Replace the rows of table `id` by one per item (`cells(item)` gives the cells' text or nodes). */
export function fillTable(id, items, cells, emptyText) {
  const table = $(id);
  const body = table.tBodies[0];
  const cols = table.tHead.rows[0].cells.length;
  if (items.length === 0) {
    const tr = el('tr', { class: 'placeholder' });
    tr.append(el('td', { colspan: String(cols) }, emptyText));
    body.replaceChildren(tr);
    return [];
  }
  const rows = items.map((item) => {
    const tr = el('tr');
    for (const c of cells(item)) {
      const td = el('td');
      if (c instanceof Node) td.append(c);
      else td.textContent = c;
      tr.append(td);
    }
    return tr;
  });
  body.replaceChildren(...rows);
  return rows;
}

/** An agent as the tables name it: its id, and its project when a filter does not fix it. */
export const agentOf = (row) => `${row.agentId} (${row.project})`;
