import { type ActiveToken, matchToken } from './store/read-tokens';

/**
 * Who may read what on the collector's HTTP port (DESIGN §10). A pure function of the request's
 * peer address, Host and Authorization headers, the tokens configured and --metrics-open.
 *
 *                       no token configured            tokens configured
 *                       ("protected mode")
 *   /healthz            open                           open
 *   page files          loopback only (*)              open (they hold no data)
 *   /api/*              loopback only (*)              Bearer token; a project token sees its project
 *   /metrics            loopback only (*)              loopback (*) or a collector-wide token
 *                       --metrics-open: open           --metrics-open: open
 *
 *   (*) a loopback peer AND a Host header naming loopback: a page of another site that a
 *       browser resolves to 127.0.0.1 (DNS rebinding) sends its own name as Host and is refused.
 *
 * The agents' tunnel is not here: the handshake authenticates it.
 */

export type RouteClass = 'open' | 'page' | 'api' | 'metrics';

export interface AccessRequest {
  route: RouteClass;
  /** socket.remoteAddress */
  peer: string | undefined;
  host: string | undefined;
  authorization: string | undefined;
}

export interface AccessPolicy {
  /** The tokens not revoked; none means protected mode. */
  tokens: readonly ActiveToken[];
  metricsOpen: boolean;
}

/** Why a request was refused; also the name of its `rejected` counter. */
export type DenyReason = 'unauthorized' | 'protectedMode' | 'forbidden';

export type Access =
  /** project null: every project. */
  { ok: true; project: string | null; tokenId?: string } | { ok: false; status: 401 | 403; code: string; reason: DenyReason; message: string };

/** Longest Authorization value looked at (a token is 56 characters). */
const MAX_AUTH_LEN = 512;

const IPV4_LOOPBACK = /^127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

function isIpv4Loopback(s: string): boolean {
  const m = IPV4_LOOPBACK.exec(s);
  return m?.slice(1).every((o) => Number(o) <= 255) === true;
}

/** A Host header naming loopback: localhost, 127.x.y.z or [::1], with an optional port. */
export function isLoopbackHost(host: string | undefined): boolean {
  if (host === undefined) return false;
  const h = host.trim().toLowerCase();
  let name: string;
  let rest: string;
  if (h.startsWith('[')) {
    const end = h.indexOf(']');
    if (end < 0) return false;
    name = h.slice(0, end + 1);
    rest = h.slice(end + 1);
  } else {
    const colon = h.indexOf(':');
    name = colon < 0 ? h : h.slice(0, colon);
    rest = colon < 0 ? '' : h.slice(colon);
  }
  if (rest !== '' && !/^:\d{1,5}$/.test(rest)) return false;
  return name === 'localhost' || name === '[::1]' || isIpv4Loopback(name);
}

/** A peer address on loopback (IPv4, IPv6, or IPv4-mapped IPv6). */
export function isLoopbackPeer(addr: string | undefined): boolean {
  if (addr === undefined) return false;
  const a = addr.toLowerCase();
  if (a === '::1') return true;
  return isIpv4Loopback(a.startsWith('::ffff:') ? a.slice(7) : a);
}

/** True when the address given to --http is a loopback address or name. */
export function isLoopbackBind(host: string): boolean {
  const h = host.toLowerCase();
  return h === 'localhost' || h === '::1' || isIpv4Loopback(h);
}

/** The token of an `Authorization: Bearer <token>` header, or undefined. */
export function bearerToken(header: string | undefined): string | undefined {
  if (header === undefined || header.length > MAX_AUTH_LEN) return undefined;
  const m = /^Bearer +(\S+) *$/i.exec(header);
  return m === null ? undefined : m[1];
}

const PROTECTED =
  'no read token is configured, so the collector answers only loopback clients that address it as localhost, 127.0.0.1 or [::1]; create a token with "apm-collector tokens create" and send it as "Authorization: Bearer <token>"';

function deny(status: 401 | 403, code: string, reason: DenyReason, message: string): Access {
  return { ok: false, status, code, reason, message };
}

export function decideAccess(req: AccessRequest, policy: AccessPolicy): Access {
  if (req.route === 'open' || (req.route === 'metrics' && policy.metricsOpen)) return { ok: true, project: null };
  const local = isLoopbackPeer(req.peer) && isLoopbackHost(req.host);
  if (policy.tokens.length === 0) {
    return local ? { ok: true, project: null } : deny(403, 'ERR_PROTECTED_MODE', 'protectedMode', PROTECTED);
  }
  if (req.route === 'page' || (req.route === 'metrics' && local)) return { ok: true, project: null };
  if (req.authorization === undefined) {
    return deny(401, 'ERR_UNAUTHORIZED', 'unauthorized', 'a read token is required: send "Authorization: Bearer <token>"');
  }
  const presented = bearerToken(req.authorization);
  const token = presented === undefined ? undefined : matchToken(presented, policy.tokens);
  if (token === undefined) return deny(401, 'ERR_UNAUTHORIZED', 'unauthorized', 'the read token is not valid (unknown, revoked or malformed)');
  if (req.route === 'metrics' && token.projectId !== null) {
    return deny(403, 'ERR_TOKEN_SCOPE', 'forbidden', '/metrics counts every project: it needs a collector-wide token (or --metrics-open)');
  }
  return { ok: true, project: token.projectId, tokenId: token.tokenId };
}
