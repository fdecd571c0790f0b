/**
 * The value parsers of the configuration keys: text in, a typed value out, or `InvalidValue`
 * with a phrase that completes "<key> (from <source>) ..." in the error message.
 */
import { isIP } from 'node:net';
import { ReconnectScheduleError, formatReconnectSchedule, parseReconnectSchedule } from '../reconnect-schedule';

/** A listening or connecting address given as `HOST:PORT` (IPv6 as `[::1]:PORT`). */
export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/** Thrown by a key's `parse`; turned into a `ConfigError` that names the key and the source. */
export class InvalidValue extends Error {
  constructor(readonly problem: string) {
    super(problem);
  }
}

function invalid(problem: string): never {
  throw new InvalidValue(problem);
}

const DIGITS = /^[0-9]+$/;
/** Node timers cannot wait longer than this. */
export const MAX_TIMER_MS = 2_147_483_647;
const MAX_UNIX_SOCKET_PATH_BYTES = 107; // sun_path is 108 bytes on Linux, including the NUL

export function integer(raw: string, min: number, max: number): number {
  const text = raw.trim();
  if (!DIGITS.test(text)) {
    if (/^[+-]?[0-9]+$/.test(text) && Number(text) < 0) invalid(`is negative; must be at least ${min}`);
    invalid('is not an integer');
  }
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n > max) invalid(`is greater than the maximum ${max}`);
  if (n < min) invalid(`is less than the minimum ${min}`);
  return n;
}

export function oneOf<T extends string>(values: readonly T[]) {
  return (raw: string): T => {
    const text = raw.trim();
    if ((values as readonly string[]).includes(text)) return text as T;
    return invalid(`is not one of ${values.join(', ')}`);
  };
}

const HOSTNAME = /^(?=.{1,253}\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$/;

/** A host name, IPv4 address or IPv6 address (brackets optional and removed). */
function host(text: string, what: string): string {
  const h = text.startsWith('[') && text.endsWith(']') ? text.slice(1, -1) : text;
  if (h === '') invalid(`has an empty ${what}`);
  if (isIP(h) !== 0) return h;
  if (/^[^:]+:[0-9]*$/.test(h)) invalid(`has a port in ${what} ${JSON.stringify(h)}; give the port separately`);
  if (!HOSTNAME.test(h)) invalid(`has an invalid ${what} ${JSON.stringify(h)}`);
  return h;
}

export function hostList(raw: string): string[] {
  if (raw.trim() === '') invalid('is empty; give at least one host');
  return raw.split(',').map((part) => host(part.trim(), 'host'));
}

/** `HOST:PORT` or `[IPV6]:PORT`; port 0 is allowed (pick a free port). '' = off. */
export function hostPortOrOff(raw: string): HostPort | null {
  const text = raw.trim();
  if (text === '') return null;
  const colon = text.lastIndexOf(':');
  if (colon < 0) invalid('is not HOST:PORT (no port)');
  const hostText = text.slice(0, colon);
  if (hostText.includes(':') && !hostText.startsWith('[')) invalid('is not HOST:PORT (write an IPv6 host in brackets, e.g. [::1]:8125)');
  const portText = text.slice(colon + 1);
  if (!DIGITS.test(portText)) invalid(`is not HOST:PORT (port ${JSON.stringify(portText)} is not an integer)`);
  const port = Number(portText);
  if (port > 65535) invalid(`is not HOST:PORT (port ${port} is greater than 65535)`);
  return { host: host(hostText, 'host'), port };
}

export function formatHostPort(v: HostPort | null): string {
  if (v === null) return '';
  return isIP(v.host) === 6 ? `[${v.host}]:${v.port}` : `${v.host}:${v.port}`;
}

export function noControlChars(raw: string): void {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting them is the point
  if (/[\u0000-\u001f\u007f]/.test(raw)) invalid('contains a control character');
}

export function text(raw: string): string {
  noControlChars(raw);
  return raw;
}

export function unixSocketPath(raw: string): string {
  noControlChars(raw);
  if (Buffer.byteLength(raw) > MAX_UNIX_SOCKET_PATH_BYTES) {
    invalid(`is ${Buffer.byteLength(raw)} bytes long; a Unix socket path may be at most ${MAX_UNIX_SOCKET_PATH_BYTES}`);
  }
  return raw;
}

/** Validates and returns the canonical text (`7x60000, 300000` → `7x60000,300000`). */
export function schedule(raw: string): string {
  try {
    return formatReconnectSchedule(parseReconnectSchedule(raw));
  } catch (err) {
    if (err instanceof ReconnectScheduleError) invalid(`is not a valid reconnect schedule: ${err.detail}`);
    throw err;
  }
}
