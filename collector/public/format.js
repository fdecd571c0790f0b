// Number, time and tag formatting for the page.
import { serverNow } from './dom.js';

export function fmtNum(v) {
  if (v === null || v === undefined || !Number.isFinite(v)) return '–';
  const a = Math.abs(v);
  if (a >= 1e9) return `${+(v / 1e9).toPrecision(3)}G`;
  if (a >= 1e6) return `${+(v / 1e6).toPrecision(3)}M`;
  if (a >= 1e4) return `${+(v / 1e3).toPrecision(3)}k`;
  if (Number.isInteger(v)) return String(v);
  return String(+v.toPrecision(3));
}
export const pad2 = (n) => String(n).padStart(2, '0');
/** HH:MM, HH:MM:SS or HH:MM:SS.f by the precision asked for (ms of a tick step). */
export function fmtClock(ms, precision = 1000) {
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
export function fmtAgo(ms) {
  const s = Math.max(0, Math.round((serverNow() - ms) / 1000));
  if (s < 2) return 'just now';
  if (s < 120) return `${s} s ago`;
  if (s < 7200) return `${Math.round(s / 60)} min ago`;
  if (s < 172800) return `${Math.round(s / 3600)} h ago`;
  return new Date(ms).toLocaleString();
}
export const fmtDuration = (ms) => (ms % 60000 === 0 ? `${ms / 60000} min` : ms % 1000 === 0 ? `${ms / 1000} s` : `${ms} ms`);
export const tagText = (tags) =>
  Object.keys(tags || {})
    .sort()
    .map((k) => `${k}=${tags[k]}`)
    .join(' ');
