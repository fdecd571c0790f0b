/**
 * The one logging policy of the sidecar and the collector, as pino options (plain data, so
 * the pure proto package can hold it without depending on pino): JSON lines with an ISO time,
 * the pid, and every field that may carry a secret replaced before the line is written.
 */

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
export type LogLevelName = (typeof LOG_LEVELS)[number];

/** Field paths redacted in every log line: access keys and instance secrets never reach a log. */
export const REDACTED_LOG_PATHS: readonly string[] = ['access_key', '*.access_key', 'accessKey', '*.accessKey', 'secret', '*.secret'];

export interface LogOptions {
  level: string;
  base: { pid: number };
  timestamp: () => string;
  redact: { paths: string[]; censor: string };
}

export function logOptions(level: string): LogOptions {
  return {
    level,
    base: { pid: process.pid },
    // pino splices this string into the line as is.
    timestamp: () => `,"time":"${new Date().toISOString()}"`,
    redact: { paths: [...REDACTED_LOG_PATHS], censor: '[redacted]' },
  };
}
