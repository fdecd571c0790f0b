import { existsSync } from 'node:fs';
import { socketPathCandidates } from '@apm-sidecar/proto';
import type { HttpInstrumentationOptions } from './http-instrumentation';

// What connect() accepts, read defensively: the options object is the app's and may be anything.

export interface ConnectOptions {
  /** Application name reported to the sidecar. */
  app?: string;
  /** Unix socket path; else APM_SIDECAR_SOCKET; else the default locations. */
  socket?: string;
  /** Metric flush period; default: what the sidecar says (1000 ms). */
  flushMs?: number;
  /** Bytes held for the sidecar while it is away or slow (default 8 MiB). */
  bufferBytes?: number;
  /** Distinct metric series this process may create (default 10000). */
  maxSeries?: number;
  reconnectMinMs?: number;
  reconnectMaxMs?: number;
  /** How long close() waits for queued bytes to be written (default 2000 ms). */
  closeTimeoutMs?: number;
  /** A write making no progress this long means the sidecar hung: reconnect (default 5000 ms). */
  stallTimeoutMs?: number;
  /** Turn on HTTP auto-instrumentation at once (true, or its options): the same as calling apm.instrumentHttp(). */
  instrumentHttp?: boolean | HttpInstrumentationOptions;
}

export function positive(v: unknown, fallback: number): number {
  return typeof v === 'number' && Number.isFinite(v) && v > 0 ? v : fallback;
}

/** setTimeout fires at once (with a warning) past 2^31-1 ms. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** Read an option without trusting the object (a getter or a Proxy may throw). */
export function option(o: object, key: string): unknown {
  try {
    return (o as Record<string, unknown>)[key];
  } catch {
    return undefined;
  }
}

/** Resolve the socket path now (called on every connection attempt, so a late sidecar is found). */
export function resolveSocket(explicit: string | undefined): string {
  if (explicit !== undefined && explicit.length > 0) return explicit;
  const env = process.env.APM_SIDECAR_SOCKET;
  if (env !== undefined && env.length > 0) return env;
  const candidates = socketPathCandidates(process.env, process.getuid?.() ?? 0, (require('node:os') as typeof import('node:os')).tmpdir());
  return candidates.find((p) => existsSync(p)) ?? (candidates[0] as string);
}
