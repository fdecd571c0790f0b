import { type EventPack, LIMITS } from '@apm-sidecar/proto';

/**
 * One DogStatsD line, parsed (pure: no state, no I/O). The datagram format, as Datadog documents it:
 *
 *   metric          <name>:<v1>[:<v2>…]|<type>[|@<rate>][|#<tag>[,<tag>…]][|c:<container id>][|T<unix s>][|<other>]
 *   event           _e{<title bytes>,<text bytes>}:<title>|<text>[|d:<unix s>][|h:<host>][|k:<key>][|p:<priority>][|s:<source>][|t:<alert type>][|#<tags>]
 *   service check   _sc|<name>|<status 0..3>[|d:<unix s>][|h:<host>][|#<tags>][|m:<message>]
 *
 * Several values on one line (protocol 1.1) share type, rate and tags; a set takes its value
 * whole (it is a string: `users:a:b|s` is the one member "a:b"). Fields the parser does not know
 * are skipped, so a newer client's extra fields do not turn lines into errors.
 */
export type MetricType = 'c' | 'g' | 'ms' | 'h' | 'd' | 's';

/** Why a line was refused; the keys of `status --json` `dogstatsd.invalidByReason`. */
export type InvalidReason =
  | 'no_type'
  | 'bad_name'
  | 'bad_type'
  | 'bad_value'
  | 'bad_sample_rate'
  | 'bad_tag'
  | 'too_many_tags'
  | 'bad_timestamp'
  | 'bad_event'
  | 'bad_service_check'
  | 'series_limit'
  | 'set_limit'
  | 'overflow';

export interface ParsedMetric {
  kind: 'metric';
  name: string;
  type: MetricType;
  /** Numbers for every type but sets. */
  values: number[];
  /** The member, for a set. */
  member: string;
  rate: number;
  tags: Record<string, string>;
  /** Milliseconds since the epoch from `|T` (counters and gauges only), else null. */
  ts: number | null;
}

export type ParsedLine = ParsedMetric | { kind: 'event'; event: EventPack } | { kind: 'invalid'; reason: InvalidReason };

const TYPES: readonly string[] = ['c', 'g', 'ms', 'h', 'd', 's'] satisfies MetricType[];
const isMetricType = (t: string): t is MetricType => TYPES.includes(t);
const CHECK_STATUS = ['ok', 'warning', 'critical', 'unknown'] as const;
const bad = (reason: InvalidReason): ParsedLine => ({ kind: 'invalid', reason });

export function parseLine(line: string): ParsedLine {
  if (line.startsWith('_e{')) return parseEvent(line);
  if (line.startsWith('_sc|')) return parseServiceCheck(line);
  return parseMetric(line);
}

function parseMetric(line: string): ParsedLine {
  const fields = line.split('|');
  const head = fields[0] as string;
  const colon = head.indexOf(':');
  const type = fields[1];
  if (colon < 0 || type === undefined) return bad('no_type');
  const name = head.slice(0, colon);
  if (name.length === 0 || Buffer.byteLength(name) > LIMITS.nameBytes) return bad('bad_name');
  if (!isMetricType(type)) return bad('bad_type');
  const raw = head.slice(colon + 1);
  const values: number[] = [];
  if (type !== 's') {
    for (const s of raw.split(':')) {
      const v = numberOf(s);
      if (v === null) return bad('bad_value');
      values.push(v);
    }
  } else if (raw.length === 0) {
    return bad('bad_value');
  }
  let rate = 1;
  let ts: number | null = null;
  const tagList: string[] = [];
  for (let i = 2; i < fields.length; i++) {
    const f = fields[i] as string;
    if (f.startsWith('@')) {
      rate = numberOf(f.slice(1)) ?? Number.NaN;
      if (!(rate > 0 && rate <= 1)) return bad('bad_sample_rate');
    } else if (f.startsWith('#')) {
      for (const t of f.slice(1).split(',')) tagList.push(t);
    } else if (f.startsWith('c:')) {
      // The container the client runs in (origin detection): the only way it reaches the product is as a tag.
      if (f.length > 2) tagList.push(`container_id:${f.slice(2)}`);
    } else if (f.startsWith('T')) {
      const secs = f.length > 1 && /^[0-9]+$/.test(f.slice(1)) ? Number(f.slice(1)) : Number.NaN;
      if (!(secs > 0) || !Number.isSafeInteger(secs * 1000)) return bad('bad_timestamp');
      // Datadog honours a timestamp on counters and gauges only; elsewhere it is ignored.
      if (type === 'c' || type === 'g') ts = secs * 1000;
    }
  }
  const tags = tagsOf(tagList);
  if (typeof tags === 'string') return bad(tags);
  // A sample rate scales counts, and the counts of h, d and ms; a gauge or a set has no count to scale.
  if (type === 'g' || type === 's') rate = 1;
  return { kind: 'metric', name, type, values, member: type === 's' ? raw : '', rate, tags, ts };
}

/** A decimal number the way clients write them; '', ' 1', '0x10', 'Infinity' and 'NaN' are not. */
export function numberOf(s: string): number | null {
  if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(s)) return null;
  const v = Number(s);
  return Number.isFinite(v) ? v : null;
}

/**
 * Tags as the product's map. A key given several times keeps every value: the distinct values,
 * sorted and joined with ',' (which cannot occur inside a DogStatsD tag), so `env:a,env:b` and
 * `env:b,env:a` are one series, as they are one tag set in DogStatsD. A bare tag has the value ''.
 */
function tagsOf(list: string[]): Record<string, string> | InvalidReason {
  // Most lines have no repeated key: values go straight into the map, and only a repeated key
  // gets a set of its values.
  const tags: Record<string, string> = {};
  let n = 0;
  let repeated: Map<string, Set<string>> | null = null;
  for (const t of list) {
    if (t.length === 0) continue;
    const c = t.indexOf(':');
    const k = c < 0 ? t : t.slice(0, c);
    const v = c < 0 ? '' : t.slice(c + 1);
    if (k.length === 0) return 'bad_tag';
    if (!Object.hasOwn(tags, k)) {
      if (++n > LIMITS.tagCount) return 'too_many_tags';
      // defineProperty: a tag named __proto__ is an ordinary key here.
      Object.defineProperty(tags, k, { value: v, enumerable: true, writable: true, configurable: true });
      continue;
    }
    repeated ??= new Map();
    let vs = repeated.get(k);
    if (vs === undefined) {
      vs = new Set([tags[k] as string]);
      repeated.set(k, vs);
    }
    vs.add(v);
  }
  if (repeated !== null) for (const [k, vs] of repeated) tags[k] = [...vs].sort().join(',');
  for (const k in tags) if (tooLong(k) || tooLong(tags[k] as string)) return 'bad_tag';
  return tags;
}

/** Over LIMITS.tagBytes in UTF-8 (a UTF-16 unit is at most 3 bytes: short strings need no count). */
function tooLong(s: string): boolean {
  return s.length * 3 > LIMITS.tagBytes && Buffer.byteLength(s) > LIMITS.tagBytes;
}

/** The optional fields shared by events and service checks, into attributes. */
function commonField(f: string, attrs: Record<string, string | number | boolean>, tags: string[]): number | null | 'bad' {
  if (f.startsWith('#')) {
    for (const t of f.slice(1).split(',')) if (t.length > 0) tags.push(t);
    return null;
  }
  if (f.startsWith('h:')) {
    attrs.hostname = f.slice(2);
    return null;
  }
  if (f.startsWith('d:')) {
    const secs = /^[0-9]+$/.test(f.slice(2)) ? Number(f.slice(2)) : Number.NaN;
    return secs > 0 && Number.isSafeInteger(secs * 1000) ? secs * 1000 : 'bad';
  }
  return null;
}

/** `_e{T,X}:title|text|…`: T and X are UTF-8 byte lengths; `\n` in the text stands for a newline. */
function parseEvent(line: string): ParsedLine {
  const m = /^_e\{(\d{1,6}),(\d{1,6})\}:/.exec(line);
  if (m === null) return bad('bad_event');
  const titleBytes = Number(m[1]);
  const textBytes = Number(m[2]);
  const rest = Buffer.from(line.slice(m[0].length), 'utf8');
  if (titleBytes === 0 || rest.length < titleBytes + 1 + textBytes || rest[titleBytes] !== 0x7c) return bad('bad_event');
  const title = rest.subarray(0, titleBytes).toString('utf8');
  const text = rest
    .subarray(titleBytes + 1, titleBytes + 1 + textBytes)
    .toString('utf8')
    .replaceAll('\\n', '\n');
  const tail = rest.subarray(titleBytes + 1 + textBytes).toString('utf8');
  if (tail.length > 0 && !tail.startsWith('|')) return bad('bad_event');
  const attrs: Record<string, string | number | boolean> = { text, alertType: 'info', priority: 'normal' };
  const tags: string[] = [];
  let ts = Date.now();
  for (const f of tail.length > 0 ? tail.slice(1).split('|') : []) {
    const r = commonField(f, attrs, tags);
    if (r === 'bad') return bad('bad_event');
    if (r !== null) ts = r;
    else if (f.startsWith('p:')) attrs.priority = f.slice(2);
    else if (f.startsWith('t:')) attrs.alertType = f.slice(2);
    else if (f.startsWith('s:')) attrs.source = f.slice(2);
    else if (f.startsWith('k:')) attrs.aggregationKey = f.slice(2);
  }
  if (tags.length > 0) attrs.tags = tags.join(',');
  return { kind: 'event', event: { ts, type: 'dogstatsd.event', message: title, attributes: attrs } };
}

/** `_sc|name|status|…`: status 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN; `m:` is the message and comes last. */
function parseServiceCheck(line: string): ParsedLine {
  // The message may itself contain '|': it is everything after the first `|m:`.
  const mAt = line.indexOf('|m:');
  const head = mAt < 0 ? line : line.slice(0, mAt);
  const fields = head.split('|');
  const name = fields[1] as string;
  const code = fields[2];
  if (name.length === 0 || code === undefined || !/^[0-3]$/.test(code)) return bad('bad_service_check');
  const status = CHECK_STATUS[Number(code)] as string;
  const attrs: Record<string, string | number | boolean> = { check: name, status, statusCode: Number(code) };
  const tags: string[] = [];
  let ts = Date.now();
  for (const f of fields.slice(3)) {
    const r = commonField(f, attrs, tags);
    if (r === 'bad') return bad('bad_service_check');
    if (r !== null) ts = r;
  }
  if (tags.length > 0) attrs.tags = tags.join(',');
  const message = mAt < 0 ? '' : line.slice(mAt + 3);
  if (message.length > 0) attrs.message = message;
  return {
    kind: 'event',
    event: { ts, type: 'dogstatsd.service_check', message: `${name}: ${status}${message.length > 0 ? ` — ${message}` : ''}`, attributes: attrs },
  };
}

const POW10 = Array.from({ length: 16 }, (_, i) => 10 ** i);

/**
 * numberOf(s.slice(a, b)), or NaN where that is null, without the slice or the regular expression
 * for the values clients send most: up to 15 significant digits, no exponent. Such a value is m / 10^k
 * with m < 2^53 and 10^k exact, and IEEE division rounds that quotient correctly, so the result is
 * Number()'s to the bit. Anything else goes through numberOf.
 */
export function decimalIn(s: string, a: number, b: number): number {
  let p = a;
  const first = s.charCodeAt(p);
  const neg = first === 45;
  if (neg || first === 43) p++;
  let m = 0;
  let digits = 0;
  let frac = 0;
  let dot = false;
  for (; p < b; p++) {
    const c = s.charCodeAt(p);
    if (c >= 48 && c <= 57) {
      m = m * 10 + (c - 48);
      digits++;
      if (dot) frac++;
    } else if (c === 46 && !dot) {
      dot = true;
    } else {
      break;
    }
  }
  if (p !== b || digits > 15 || digits === 0) return numberOf(s.slice(a, b)) ?? Number.NaN;
  const v = m / (POW10[frac] as number);
  return neg ? -v : v;
}
