import type { ClientRequest } from 'node:http';

// How correlation headers get onto outgoing node:http / node:https requests.
//
// Node publishes `http.client.request.created` before a request's headers are
// rendered (v22.12, v23.2 and later); subscribing there needs no patching. On
// older versions (Node 20) the only client channel, `http.client.request.start`,
// fires after the headers are written (setHeader then throws
// ERR_HTTP_HEADERS_SENT), so there the exported request/get functions of both
// modules are wrapped, and put back as they were by the returned undo function.

type RequestFn = (...args: unknown[]) => ClientRequest;
type HttpModule = { request: RequestFn; get: RequestFn };

export function hasCreatedChannel(version = process.versions.node): boolean {
  const [major = 0, minor = 0] = version.split('.').map(Number);
  return major > 23 || (major === 23 && minor >= 2) || (major === 22 && minor >= 12);
}

/** Wrap request/get of node:http and node:https so every new ClientRequest goes through `onCreated` before its headers are rendered. */
export function wrapRequestFunctions(onCreated: (req: ClientRequest) => void): () => void {
  const undo: (() => void)[] = [];
  for (const mod of [require('node:http'), require('node:https')] as HttpModule[]) {
    const origRequest = mod.request;
    const request: RequestFn = function (this: unknown, ...args: unknown[]) {
      const req = origRequest.apply(this, args);
      onCreated(req);
      return req;
    };
    // get() is request() + end(); the module's own get calls its internal request, past the wrapper.
    const get: RequestFn = function (this: unknown, ...args: unknown[]) {
      const req = request.apply(this, args);
      req.end();
      return req;
    };
    const origGet = mod.get;
    mod.request = request;
    mod.get = get;
    undo.push(() => {
      if (mod.request === request) mod.request = origRequest;
      if (mod.get === get) mod.get = origGet;
    });
  }
  syncEsm();
  return () => {
    for (const u of undo) u();
    syncEsm();
  };
}

/** Make `import { request } from 'node:http'` see the current functions too. */
function syncEsm(): void {
  (require('node:module') as typeof import('node:module')).syncBuiltinESMExports();
}

/** Add the headers a request does not carry yet; a request whose headers are already rendered is left alone. */
export function addHttpHeaders(req: ClientRequest, headers: Record<string, string>): void {
  if (req.headersSent) return;
  for (const k in headers) {
    if (req.getHeader(k) === undefined) req.setHeader(k, headers[k] as string);
  }
}

/** The part of undici's request object (`undici:request:create`) used here. */
export interface UndiciRequest {
  method?: string;
  origin?: unknown;
  path?: string;
  headers?: unknown;
  addHeader(name: string, value: string): unknown;
}

function undiciHas(headers: unknown, name: string): boolean {
  // undici 6 keeps [name, value, name, value, ...]; older ones a raw "name: value\r\n" string.
  if (Array.isArray(headers)) {
    for (let i = 0; i < headers.length; i += 2) if (String(headers[i]).toLowerCase() === name) return true;
    return false;
  }
  return typeof headers === 'string' && headers.toLowerCase().includes(`${name}:`);
}

export function addUndiciHeaders(req: UndiciRequest, headers: Record<string, string>): void {
  for (const k in headers) if (!undiciHas(req.headers, k)) req.addHeader(k, headers[k] as string);
}

/** `GET host:port/path` of an outgoing request, without its query string (step text, not a metric tag). */
export function describeRequest(method: unknown, host: unknown, path: unknown): string {
  const p = typeof path === 'string' ? path : '/';
  const q = p.indexOf('?');
  return `${typeof method === 'string' ? method : 'GET'} ${String(host ?? '')}${q >= 0 ? p.slice(0, q) : p}`.slice(0, 512);
}
