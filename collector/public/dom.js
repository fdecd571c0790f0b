// DOM helpers and the collector's clock, shared by the page's modules.
const SVG_NS = 'http://www.w3.org/2000/svg';

export const $ = (id) => document.getElementById(id);
export const el = (tag, attrs = {}, text) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
};
export const svg = (tag, attrs = {}, text) => {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
};

// The collector's clock, from the Date header: the page's own clock may be off.
let clockOffset = 0;
export const serverNow = () => Date.now() + clockOffset;

/** Learn the collector's clock from an answer's Date header (ignored within 5 s of ours). */
export function learnServerDate(header) {
  const date = Date.parse(header || '');
  if (Number.isFinite(date)) {
    const off = date - Date.now();
    clockOffset = Math.abs(off) > 5000 ? off : 0;
  }
}
