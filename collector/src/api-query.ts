import { ApmError } from '@apm-sidecar/proto';
import { type ListQuery, MAX_QUERY_LIMIT, type MetricQuery, type TraceQuery } from './store/index';

/**
 * The API's query parameters: each one checked (given once, not empty, not too long, a
 * number in range), turned into a store query, and narrowed to the caller's project.
 * Every refusal is an HttpError (400, or 403 for another project), answered as JSON.
 */

/** An answer other than 200, with its status and a stable code. */
export class HttpError extends ApmError {
  constructor(
    readonly status: number,
    code: string,
    message: string,
  ) {
    super(code, message);
  }
}

/** A query parameter given twice, empty, too long, not a number in range, or `from` after `to`. Answered 400. */
export class BadQueryError extends HttpError {
  constructor(message: string) {
    super(400, 'ERR_BAD_QUERY', message);
  }
}

/** A file of the web page could not be read (the installation is incomplete). Answered 500. */
export class NoPageError extends HttpError {
  constructor(why: string) {
    super(500, 'ERR_NO_PAGE', `the web page is missing: ${why}`);
  }
}

/** A project-scoped read token asked for another project (or for /metrics, which counts every project). Answered 403. */
export class TokenScopeError extends HttpError {
  constructor(message: string) {
    super(403, 'ERR_TOKEN_SCOPE', message);
  }
}

// The caller's project (null: every project) narrows what it reads here and nowhere else:
// store queries get a project condition, agent rows are kept when their project matches.
/**
 * A query as a read token may make it: a project-scoped token reads its own project only,
 * and asking for another one with ?project= is refused rather than silently narrowed.
 */
export function scoped<T extends ListQuery | MetricQuery>(q: T, project: string | null): T {
  if (project === null) return q;
  if (q.project !== undefined && q.project !== project) {
    throw new TokenScopeError(`this read token is for project ${project} only`);
  }
  return { ...q, project };
}

/** One value of a query parameter: absent → undefined; given twice → 400. */
function param(q: URLSearchParams, name: string, maxLen = 1024): string | undefined {
  const all = q.getAll(name);
  if (all.length === 0) return undefined;
  if (all.length > 1) throw new BadQueryError(`query parameter "${name}" is given more than once`);
  const v = all[0] as string;
  if (v.length === 0) throw new BadQueryError(`query parameter "${name}" is empty`);
  if (v.length > maxLen) throw new BadQueryError(`query parameter "${name}" is longer than ${maxLen} characters`);
  return v;
}

function intParam(q: URLSearchParams, name: string, what: string, min: number, max: number): number | undefined {
  const raw = param(q, name, 32);
  if (raw === undefined) return undefined;
  const v = /^\d+$/.test(raw) ? Number(raw) : Number.NaN;
  if (!Number.isSafeInteger(v) || v < min || v > max) {
    throw new BadQueryError(`query parameter "${name}" must be ${what}, got ${JSON.stringify(raw.slice(0, 40))}`);
  }
  return v;
}

const EPOCH_MS = 'epoch milliseconds (a non-negative integer)';

export function metricQueryFrom(q: URLSearchParams): MetricQuery {
  const out: MetricQuery = {};
  const project = param(q, 'project', 64);
  if (project !== undefined) out.project = project;
  const agent = param(q, 'agent');
  const name = param(q, 'name');
  const from = intParam(q, 'from', EPOCH_MS, 0, Number.MAX_SAFE_INTEGER);
  const to = intParam(q, 'to', EPOCH_MS, 0, Number.MAX_SAFE_INTEGER);
  const limit = intParam(q, 'limit', `an integer from 1 to ${MAX_QUERY_LIMIT}`, 1, MAX_QUERY_LIMIT);
  if (from !== undefined && to !== undefined && from > to) throw new BadQueryError(`"from" (${from}) is after "to" (${to})`);
  if (agent !== undefined) out.agent = agent;
  if (name !== undefined) out.name = name;
  if (from !== undefined) out.from = from;
  if (to !== undefined) out.to = to;
  if (limit !== undefined) out.limit = limit;
  const rollup = param(q, 'rollup');
  if (rollup !== undefined) {
    if (rollup !== '1m') throw new BadQueryError(`"rollup" must be 1m, got "${rollup}"`);
    out.rollup = true;
  }
  return out;
}

/** ?traceId=&name= of the trace list, besides the list's own. */
export function traceQueryFrom(q: URLSearchParams): TraceQuery {
  const out: TraceQuery = listQueryFrom(q);
  const traceId = param(q, 'traceId', 32);
  if (traceId !== undefined) {
    if (!/^[0-9a-f]{32}$/.test(traceId)) throw new BadQueryError(`"traceId" must be 32 lowercase hex digits, got ${JSON.stringify(traceId)}`);
    out.traceId = traceId;
  }
  const name = param(q, 'name');
  if (name !== undefined) out.name = name;
  return out;
}

/** ?project=&agent=&limit= of the trace and event lists. */
export function listQueryFrom(q: URLSearchParams): ListQuery {
  const project = param(q, 'project', 64);
  const agent = param(q, 'agent');
  const limit = intParam(q, 'limit', `an integer from 1 to ${MAX_QUERY_LIMIT}`, 1, MAX_QUERY_LIMIT);
  return { ...(project !== undefined && { project }), ...(agent !== undefined && { agent }), ...(limit !== undefined && { limit }) };
}
