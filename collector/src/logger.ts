import pino, { type Logger } from 'pino';

export type { Logger };

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;

/** JSON lines to stdout (fd 1), synchronous so nothing is lost on exit. Secrets are redacted by path. */
export function createLogger(level: string, destination: number | string = 1): Logger {
  return pino(
    {
      level,
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: ['secret', '*.secret', 'accessKey', '*.accessKey', 'access_key', '*.access_key'], censor: '[redacted]' },
    },
    pino.destination({ dest: destination, sync: true }),
  );
}
