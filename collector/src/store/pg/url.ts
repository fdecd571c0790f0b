import { StoreUrlError } from '../../errors';

/**
 * The PostgreSQL store's URL (DESIGN §11): `postgres://USER@HOST:PORT/DB` or `postgresql://…`,
 * with `?host=/socket/dir` for a Unix socket. The URL is a command-line flag, which every user of
 * the machine can read in `ps`: a password in it is refused; the pg client takes it from
 * PGPASSWORD or the password file (PGPASSFILE, ~/.pgpass).
 */

export interface PgTarget {
  /** A host name, an address, or a Unix socket directory (starts with '/'). */
  host: string;
  port: number;
  /** Undefined: the client's default (PGUSER, else the login name). */
  user: string | undefined;
  database: string;
  /** TLS: off, required without verifying the server, or verified (verify-full). */
  ssl: 'disable' | 'require' | 'verify-full';
  /** The URL without password, for logs and errors. */
  location: string;
  /** host:port (or the socket's path) for "cannot reach" messages. */
  server: string;
}

const PARAMS = new Set(['host', 'port', 'sslmode']);
const SSL_MODES: Record<string, PgTarget['ssl']> = { disable: 'disable', require: 'require', 'verify-ca': 'verify-full', 'verify-full': 'verify-full' };

export function isPostgresUrl(s: string): boolean {
  return /^postgres(ql)?:\/\//i.test(s.trim());
}

const SHAPE = /^(postgres(?:ql)?):\/\/(?:([^@/?#]*)@)?([^/?#]*)(?:\/([^?#]*))?(?:\?([^#]*))?$/i;

function decode(part: string, what: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    throw new StoreUrlError(`bad percent-encoding in the ${what}`);
  }
}

/**
 * Parse a store URL; throws StoreUrlError (its message never repeats a password). Parsed here
 * rather than by WHATWG URL, which refuses `postgres://USER@/DB?host=/socket/dir`.
 */
export function parsePostgresUrl(raw: string): PgTarget {
  const s = raw.trim();
  if (!isPostgresUrl(s)) throw new StoreUrlError('it does not start with postgres:// or postgresql://');
  const m = SHAPE.exec(s);
  if (m === null) throw new StoreUrlError('it is not of the form postgres://USER@HOST:PORT/DB');
  const [, scheme = '', userinfo, hostport = '', path = '', query = ''] = m;
  if (userinfo?.includes(':') === true) {
    throw new StoreUrlError('it holds a password; give the password in PGPASSWORD or a password file (PGPASSFILE, ~/.pgpass), never in a flag');
  }
  const params = new URLSearchParams(query);
  for (const k of params.keys()) {
    if (!PARAMS.has(k)) throw new StoreUrlError(`unknown parameter "${k.slice(0, 40)}" (known: ${[...PARAMS].join(', ')})`);
  }
  const hp = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9._~%-]*))(?::(\d*))?$/.exec(hostport);
  if (hp === null) throw new StoreUrlError(`bad host "${hostport.slice(0, 80)}" (one host, HOST:PORT)`);
  const socketDir = params.get('host');
  if (socketDir !== null && !socketDir.startsWith('/')) throw new StoreUrlError('?host= must be the absolute path of a Unix socket directory');
  const host = socketDir ?? hp[1] ?? decode(hp[2] ?? '', 'host');
  if (host === '') throw new StoreUrlError('it names no host (postgres://USER@HOST:PORT/DB, or ?host=/socket/dir)');
  const portText = params.get('port') ?? hp[3] ?? '';
  const port = portText === '' ? 5432 : Number(portText);
  if (!/^\d*$/.test(portText) || !Number.isInteger(port) || port < 1 || port > 65535) throw new StoreUrlError(`bad port "${portText.slice(0, 20)}"`);
  const database = decode(path, 'database name');
  if (database === '' || database.includes('/')) throw new StoreUrlError('it names no database (postgres://USER@HOST:PORT/DB)');
  const user = userinfo === undefined || userinfo === '' ? undefined : decode(userinfo, 'user name');
  const mode = params.get('sslmode') ?? 'disable';
  const ssl = SSL_MODES[mode];
  if (ssl === undefined) throw new StoreUrlError(`unknown sslmode "${mode.slice(0, 20)}" (known: ${Object.keys(SSL_MODES).join(', ')})`);
  const server = host.startsWith('/') ? `${host}/.s.PGSQL.${port}` : `${host.includes(':') ? `[${host}]` : host}:${port}`;
  const q = [...params.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const location = `${scheme.toLowerCase()}://${userinfo === undefined ? '' : `${userinfo}@`}${hostport}/${path}${q.length > 0 ? `?${q.map(([k, v]) => `${k}=${v}`).join('&')}` : ''}`;
  return { host, port, user, database, ssl, location, server };
}
