import { AsyncLocalStorage } from 'node:async_hooks';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import type { ClientRequest, IncomingMessage, ServerResponse } from 'node:http';
import { CORRELATION_HEADER, formatCorrelation, parseCorrelation } from '@apm-sidecar/proto';
import { type UndiciRequest, addHttpHeaders, addUndiciHeaders, describeRequest, hasCreatedChannel, wrapRequestFunctions } from './http-outgoing';
import { DEFAULT_MAX_ROUTES, RouteNames, defaultRoute, httpMethod } from './http-route';
import type { Counter } from './metrics';
import { option, positive } from './options';
import type { ShimState } from './state';
import type { ActiveTransaction, OutgoingHeaders, Transaction } from './transaction';
import { tagValue } from './packs';

// For the package's defaultRoute(), which loads this file on its first call.
export { defaultRoute };

/**
 * A detected transaction. Not `instanceof`: this module is bundled apart from the client
 * (dist/shim-http.js, loaded on first use), so it does not share the client's classes.
 */
function isActive(tx: Transaction | undefined): tx is ActiveTransaction {
  return tx?.detected === true;
}

// HTTP auto-instrumentation through node:diagnostics_channel:
//
//   http.server.request.start   → startTransaction(METHOD route, headers); the
//                                 transaction becomes the async context of the handler
//   http.server.response.finish → requests{tx,status=2xx…} + 1, tx.end (5xx = error)
//   response 'close' unfinished → the same with status 'aborted' (client went away)
//   undici:request:create       → fetch() carries apm-correlation + traceparent
//   undici:request:headers      → a step 'http' on the calling transaction
//   http.client.request.created → the same for node:http/https (Node ≥ 22.12; see http-outgoing.ts for Node 20)
//   http.client.response.finish → a step 'http' on the calling transaction

export interface HttpInstrumentationOptions {
  /** The route of a request (e.g. '/users/:id'); undefined or a throw falls back to the default (ids in the path collapsed to :id). */
  route?: (req: IncomingMessage) => string | undefined;
  /** Distinct transaction names kept; later ones are named `METHOD (other)` (default 500). */
  maxRoutes?: number;
  /** Turn incoming requests into transactions (default true). */
  incoming?: boolean;
  /** Add correlation headers to outgoing http/https/fetch calls (default true). */
  outgoing?: boolean;
}

/** What the instrumentation needs from the client. */
export interface HttpHost {
  readonly state: ShimState;
  startTransaction(name: string, incomingHeaders?: unknown): Transaction;
  counter(name: string, tags: Record<string, string>): Counter;
  drop(reason: string): void;
}

export interface HttpInstrumentation {
  /** Unsubscribe and undo any wrapping. Safe to call twice. */
  stop(): void;
}

const REQUESTS = 'http.server.requests';
const MAX_STATUS_HANDLES = 5000;
const NONE: OutgoingHeaders = Object.freeze({}) as OutgoingHeaders;

interface Outgoing {
  tx: ActiveTransaction;
  t0: number;
  text: string;
}

/** One instrumentation per process: two would both turn each request into a transaction. */
let current: HttpInstrumenter | null = null;

export function instrumentHttp(host: HttpHost, opts: unknown): HttpInstrumentation {
  if (current !== null) {
    host.drop('http_already_instrumented');
    return { stop() {} };
  }
  current = new HttpInstrumenter(host, typeof opts === 'object' && opts !== null ? opts : {});
  return current;
}

class HttpInstrumenter implements HttpInstrumentation {
  private readonly context = new AsyncLocalStorage<Transaction>();
  private readonly names: RouteNames;
  private readonly route: ((req: IncomingMessage) => string | undefined) | undefined;
  private readonly serving = new WeakMap<ServerResponse, ActiveTransaction>();
  private readonly calling = new WeakMap<object, Outgoing>();
  private readonly statusHandles = new Map<string, Counter>();
  private readonly subscriptions: [string, (msg: unknown) => void][] = [];
  private unwrap: (() => void) | null = null;
  private stopped = false;
  /** One function for every response's 'close' (called with the response as `this`), not a closure per request. */
  private readonly onClose: (this: ServerResponse) => void;

  constructor(
    private readonly host: HttpHost,
    o: object,
  ) {
    const self = this;
    this.onClose = function (this: ServerResponse): void {
      try {
        self.responseFinish(this, true);
      } catch {
        self.host.drop('internal');
      }
    };
    const route = option(o, 'route');
    this.route = typeof route === 'function' ? (route as (req: IncomingMessage) => string | undefined) : undefined;
    this.names = new RouteNames(Math.floor(positive(option(o, 'maxRoutes'), DEFAULT_MAX_ROUTES)));
    if (option(o, 'incoming') !== false) {
      this.on('http.server.request.start', (m) => this.requestStart(m as { request: IncomingMessage; response: ServerResponse }));
      this.on('http.server.response.finish', (m) => this.responseFinish((m as { response: ServerResponse }).response, false));
    }
    if (option(o, 'outgoing') !== false) {
      this.on('undici:request:create', (m) => this.fetchCreated((m as { request: UndiciRequest }).request));
      this.on('undici:request:headers', (m) => this.callDone((m as { request: object }).request));
      this.on('http.client.response.finish', (m) => this.callDone((m as { request: object }).request));
      if (hasCreatedChannel()) this.on('http.client.request.created', (m) => this.httpCreated((m as { request: ClientRequest }).request));
      else
        this.unwrap = wrapRequestFunctions((req) => {
          // Called inside the app's http.request(): it must not throw there, nor act once stopped
          // (a reference to the wrapper the app kept).
          if (this.stopped) return;
          try {
            this.httpCreated(req);
          } catch {
            this.host.drop('internal');
          }
        });
    }
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    for (const [name, fn] of this.subscriptions) unsubscribe(name, fn);
    this.unwrap?.();
    if (current === this) current = null;
  }

  /** Subscribe `fn`, never letting it throw into Node's HTTP code. */
  private on(name: string, fn: (msg: unknown) => void): void {
    const safe = (msg: unknown): void => {
      try {
        fn(msg);
      } catch {
        this.host.drop('internal');
      }
    };
    subscribe(name, safe);
    this.subscriptions.push([name, safe]);
  }

  // --- incoming ---------------------------------------------------------------

  private requestStart({ request, response }: { request: IncomingMessage; response: ServerResponse }): void {
    const tx = this.host.startTransaction(this.txName(request), request.headers);
    // Published synchronously before the 'request' event: the handler and what it
    // awaits run in this context, so its outgoing calls find their transaction.
    this.context.enterWith(tx);
    if (!isActive(tx)) return;
    this.serving.set(response, tx);
    response.once('close', this.onClose);
  }

  private responseFinish(response: ServerResponse, closed: boolean): void {
    const tx = this.serving.get(response);
    if (tx === undefined) return;
    this.serving.delete(response);
    const aborted = closed && !response.writableFinished;
    const status = aborted ? 'aborted' : `${Math.floor(response.statusCode / 100)}xx`;
    this.requests(tx.name, status).add(1);
    if (aborted) tx.end({ error: 'aborted: the client closed the connection' });
    else if (response.statusCode >= 500) tx.end({ error: `HTTP ${response.statusCode}` });
    else tx.end();
  }

  private txName(req: IncomingMessage): string {
    const method = httpMethod(req.method);
    let route: string | undefined;
    if (this.route !== undefined) {
      try {
        const r = this.route(req);
        if (typeof r === 'string' && r.length > 0) route = r;
      } catch {
        this.host.drop('route');
      }
    }
    return this.names.name(method, route ?? defaultRoute(req.url));
  }

  private requests(tx: string, status: string): Counter {
    const key = `${status} ${tx}`;
    let c = this.statusHandles.get(key);
    if (c === undefined) {
      c = this.host.counter(REQUESTS, { tx: tagValue(tx), status });
      if (this.statusHandles.size < MAX_STATUS_HANDLES) this.statusHandles.set(key, c);
    }
    return c;
  }

  // --- outgoing ---------------------------------------------------------------

  /** The headers an outgoing call carries: the current transaction's, with notxdetect=true while muted. */
  private outgoing(tx: Transaction | undefined): OutgoingHeaders {
    const base = tx?.outgoingHeaders() ?? NONE;
    if (this.host.state !== 'muted') return base;
    const c = parseCorrelation(base[CORRELATION_HEADER]);
    c.delete('txid');
    c.set('notxdetect', 'true');
    return { ...base, [CORRELATION_HEADER]: formatCorrelation(c) };
  }

  private httpCreated(req: ClientRequest): void {
    const tx = this.context.getStore();
    const headers = this.outgoing(tx);
    if (headers !== NONE) addHttpHeaders(req, headers);
    if (isActive(tx)) this.calling.set(req, { tx, t0: performance.now(), text: describeRequest(req.method, req.getHeader('host') ?? req.host, req.path) });
  }

  private fetchCreated(req: UndiciRequest): void {
    const tx = this.context.getStore();
    const headers = this.outgoing(tx);
    if (headers !== NONE) addUndiciHeaders(req, headers);
    if (isActive(tx)) this.calling.set(req, { tx, t0: performance.now(), text: describeRequest(req.method, req.origin, req.path) });
  }

  private callDone(req: object): void {
    const c = this.calling.get(req);
    if (c === undefined) return;
    this.calling.delete(req);
    if (!c.tx.isEnded) c.tx.step('http', c.text, performance.now() - c.t0);
  }
}
