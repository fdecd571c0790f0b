// Transaction names for incoming HTTP requests. Each distinct name becomes a
// metric series (apm.transaction.duration{tx}) and a row on the collector, so
// names must stay few: ids in paths are collapsed, lengths are capped and the
// number of distinct names is bounded, the rest sharing one overflow name.

/** Methods kept as they are; anything else (custom verbs are unbounded) becomes OTHER. */
const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'CONNECT', 'TRACE']);
export const MAX_ROUTE_CHARS = 128;
const MAX_SEGMENTS = 8;
export const DEFAULT_MAX_ROUTES = 500;
/** The name every request gets once maxRoutes distinct names exist. */
export const OVERFLOW_ROUTE = '(other)';

const NUMERIC = /^\d+$/;
const UUID = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i;
/** Hex ids (object ids, hashes): 8+ hex digits with at least one digit, so words like "deadbeef" do not qualify by accident… */
const HEX = /^(?=.*\d)[0-9a-f]{8,}$/i;
/** …and any long segment with a digit in it (tokens, base64 ids, dates), which a route template would not contain. */
const LONG_WITH_DIGIT = /^(?=.{16,})(?=.*\d)/;

export function httpMethod(m: unknown): string {
  return typeof m === 'string' && METHODS.has(m) ? m : 'OTHER';
}

function collapse(segment: string): string {
  if (NUMERIC.test(segment) || UUID.test(segment) || HEX.test(segment) || LONG_WITH_DIGIT.test(segment)) return ':id';
  return segment;
}

/** `/users/42/orders/9f8e…?x=1` → `/users/:id/orders/:id`: query dropped, id-like segments collapsed, at most 8 segments. */
export function defaultRoute(url: unknown): string {
  if (typeof url !== 'string' || url.length === 0) return '/';
  let end = url.length;
  const q = url.indexOf('?');
  if (q >= 0) end = q;
  const h = url.indexOf('#');
  if (h >= 0 && h < end) end = h;
  const parts = url.slice(0, Math.min(end, 4096)).split('/');
  const out: string[] = [];
  for (const p of parts) {
    if (p.length === 0) continue;
    if (out.length === MAX_SEGMENTS) {
      out.push('…');
      break;
    }
    out.push(collapse(p));
  }
  return `/${out.join('/')}`.slice(0, MAX_ROUTE_CHARS);
}

/** Remembers the names given so far; past `max` distinct ones, new names become `METHOD (other)`. */
export class RouteNames {
  private readonly seen = new Set<string>();
  constructor(private readonly max: number) {}

  name(method: string, route: string): string {
    const n = `${method} ${route.slice(0, MAX_ROUTE_CHARS)}`;
    if (this.seen.has(n)) return n;
    if (this.seen.size >= this.max) return `${method} ${OVERFLOW_ROUTE}`;
    this.seen.add(n);
    return n;
  }
}
