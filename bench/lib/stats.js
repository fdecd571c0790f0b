'use strict';
/** Small statistics and formatting helpers shared by the benches. */

function sorted(xs) {
  return [...xs].sort((a, b) => a - b);
}

/** Linear-interpolated quantile of a non-empty list. */
function quantile(xs, q) {
  const s = sorted(xs);
  if (s.length === 0) return Number.NaN;
  const pos = (s.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return s[lo] + (s[hi] - s[lo]) * (pos - lo);
}

const median = (xs) => quantile(xs, 0.5);

/** 1234567 → "1,234,567"; fractional numbers keep `digits` decimals. */
function num(v, digits = 0) {
  if (!Number.isFinite(v)) return String(v);
  return v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/** Render rows (arrays of strings) as an aligned Markdown table. */
function table(header, rows) {
  const all = [header, ...rows].map((r) => r.map((c) => String(c)));
  const width = header.map((_, i) => Math.max(...all.map((r) => r[i].length)));
  const line = (r) => `| ${r.map((c, i) => c.padEnd(width[i])).join(' | ')} |`;
  return [line(all[0]), `| ${width.map((w) => '-'.repeat(w)).join(' | ')} |`, ...all.slice(1).map(line)].join('\n');
}

/** A deterministic PRNG (mulberry32) so every run builds the same inputs. */
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Log-normal latencies in ms (median `medianMs`, shape `sigma`), from a seeded PRNG. */
function latencies(n, seed, medianMs = 20, sigma = 0.5) {
  const r = rng(seed);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    // Box–Muller
    const u = 1 - r();
    const v = r();
    const z = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
    out[i] = medianMs * Math.exp(sigma * z);
  }
  return out;
}

module.exports = { quantile, median, num, table, rng, latencies };
