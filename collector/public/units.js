// A metric's unit, read from its name by the usual conventions (…_ms, …duration, …bytes).
const RULES = [
  [/(^|[._])(ms|millis|milliseconds)$/, 'ms'],
  [/(^|[._])(duration|latency|elapsed|response_time)($|[._])/, 'ms'],
  [/(^|[._])(s|sec|secs|seconds)$/, 's'],
  [/bytes?($|[._])/, 'B'],
  [/(^|[._])(pct|percent)$/, '%'],
];

export function unitOf(name) {
  const n = String(name).toLowerCase();
  for (const [re, unit] of RULES) if (re.test(n)) return unit;
  return '';
}

/** A value with its unit, for labels. */
export const withUnit = (text, unit) => (unit === '' ? text : unit === '%' ? `${text}%` : `${text} ${unit}`);
