import { constants, accessSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

export const SYSTEM_DATA_DIR = '/var/lib/apm-sidecar';

function usable(dir: string): boolean {
  try {
    accessSync(existsSync(dir) ? dir : dirname(dir), constants.W_OK | constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** data_dir, else /var/lib/apm-sidecar when usable, else <tmpdir>/apm-sidecar-<uid>/data. */
export function resolveDataDir(configured: string): string {
  if (configured.length > 0) return configured;
  if (usable(SYSTEM_DATA_DIR)) return SYSTEM_DATA_DIR;
  return join(tmpdir(), `apm-sidecar-${process.getuid?.() ?? 0}`, 'data');
}
