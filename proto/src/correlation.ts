/**
 * Trace correlation headers.
 *
 *   apm-correlation: k=v;k=v        (e.g. txid=4bf92f3577b34da6;notxdetect=true)
 *   traceparent:     00-<trace-id 32 hex>-<parent-id 16 hex>-<flags 2 hex>   (W3C Trace Context)
 *
 * A request carrying notxdetect=true is not detected as a transaction, and the
 * flag is passed on downstream.
 */
export const CORRELATION_HEADER = 'apm-correlation';
export const TRACEPARENT_HEADER = 'traceparent';

const MAX_HEADER_CHARS = 4096;

export type HeaderBag = Record<string, string | string[] | undefined> | Headers | null | undefined;

interface HeadersLike {
  get(name: string): string | null;
}

function isHeadersLike(h: unknown): h is HeadersLike {
  return typeof h === 'object' && h !== null && typeof (h as HeadersLike).get === 'function';
}

/** Read one header from a Node IncomingHttpHeaders-like object or a fetch Headers. */
export function readHeader(headers: unknown, name: string): string | undefined {
  if (headers === null || typeof headers !== 'object') return undefined;
  let v: unknown;
  if (isHeadersLike(headers)) v = headers.get(name);
  else v = (headers as Record<string, unknown>)[name];
  if (Array.isArray(v)) v = v[0];
  return typeof v === 'string' && v.length <= MAX_HEADER_CHARS ? v : undefined;
}

export function parseCorrelation(value: string | undefined): Map<string, string> {
  const out = new Map<string, string>();
  if (value === undefined) return out;
  for (const part of value.split(';')) {
    const eq = part.indexOf('=');
    if (eq <= 0) continue;
    const k = part.slice(0, eq).trim();
    const v = part.slice(eq + 1).trim();
    if (k.length > 0 && out.size < 32) out.set(k, v);
  }
  return out;
}

export function formatCorrelation(pairs: Map<string, string>): string {
  let s = '';
  for (const [k, v] of pairs) s += `${s.length === 0 ? '' : ';'}${k}=${v}`;
  return s;
}

export interface TraceParent {
  traceId: string;
  parentId: string;
  flags: string;
}

const TRACEPARENT_RE = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;

export function parseTraceparent(value: string | undefined): TraceParent | undefined {
  if (value === undefined) return undefined;
  const m = TRACEPARENT_RE.exec(value.trim());
  if (m === null) return undefined;
  const [, version, traceId, parentId, flags, rest] = m as unknown as [string, string, string, string, string, string | undefined];
  if (version === 'ff') return undefined;
  if (version === '00' && rest !== undefined) return undefined;
  if (/^0+$/.test(traceId) || /^0+$/.test(parentId)) return undefined;
  return { traceId, parentId, flags };
}

export function formatTraceparent(traceId: string, spanId: string, sampled = true): string {
  return `00-${traceId}-${spanId}-${sampled ? '01' : '00'}`;
}
