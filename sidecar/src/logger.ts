import { logOptions } from '@apm-sidecar/proto';
import pino, { type Logger } from 'pino';

export type { Logger };

/** JSON lines to stdout (fd 1), synchronous so nothing is lost on exit; secrets redacted (proto's logOptions). */
export function createLogger(level: string, destination: number | string = 1): Logger {
  return pino(logOptions(level), pino.destination({ dest: destination, sync: true }));
}
