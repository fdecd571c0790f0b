import { ApmClient, type ConnectOptions } from './client';

/** Create a client and start connecting to the sidecar in the background. Never throws. */
export function connect(opts?: ConnectOptions): ApmClient {
  return new ApmClient(opts);
}

export { ApmClient, SHIM_VERSION } from './client';
export type { ConnectOptions, EventInput, ShimState, ShimStats } from './client';
export type { Counter, Gauge, Histogram } from './metrics';
export type { EndOptions, OutgoingHeaders, Transaction } from './transaction';
export { backoffDelay } from './backoff';
export type { HttpInstrumentation, HttpInstrumentationOptions } from './http-instrumentation';

/**
 * The route instrumentHttp() names a request by when no `route` option gives one
 * (`/users/42?x=1` → `/users/:id`). It lives with the HTTP instrumentation
 * (dist/shim-http.js), loaded by the first call.
 */
export function defaultRoute(url: unknown): string {
  return (require('./http-instrumentation') as typeof import('./http-instrumentation')).defaultRoute(url);
}
