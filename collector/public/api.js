// The JSON API, called with the read token when there is one.
import { learnServerDate } from './dom.js';
import { REFRESH_MS } from './options.js';

export class ApiError extends Error {}
/** The API answered 401: no read token, or one it does not accept. */
export class AuthError extends ApiError {}

// The read token, asked for once and kept for this tab only (sessionStorage), sent on every API call.
const TOKEN_KEY = 'apm-collector-token';
// Where storage is disabled the token lives as long as this page.
let pageToken = '';
export const readToken = () => {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || pageToken;
  } catch {
    return pageToken;
  }
};

export async function getJson(path) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), Math.max(5000, REFRESH_MS * 3));
  const headers = { accept: 'application/json' };
  const token = readToken();
  if (token) headers.authorization = `Bearer ${token}`;
  let res;
  try {
    res = await fetch(path, { cache: 'no-store', signal: ctl.signal, headers });
  } catch (err) {
    throw new ApiError(err.name === 'AbortError' ? 'no answer in time' : `cannot reach the collector (${err.message})`);
  } finally {
    clearTimeout(timer);
  }
  learnServerDate(res.headers.get('date'));
  let body;
  try {
    body = await res.json();
  } catch {
    throw new ApiError(`HTTP ${res.status}: the answer is not JSON`);
  }
  if (!res.ok) {
    const e = body?.error;
    if (res.status === 401) throw new AuthError(e ? e.message : 'a read token is required');
    throw new ApiError(e ? `HTTP ${res.status} ${e.code}: ${e.message}` : `HTTP ${res.status}`);
  }
  return body;
}

/** Keep a token for this tab (sessionStorage, else this page only). */
export function keepToken(value) {
  pageToken = value;
  try {
    sessionStorage.setItem(TOKEN_KEY, value);
  } catch {
    // kept nowhere: this load only
  }
}

/** Forget the token (the collector refused it, or none was given). */
export function forgetToken() {
  pageToken = '';
  try {
    sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // storage disabled: the token is asked again on each load
  }
}
