import { accessSync, chmodSync, constants, statSync } from 'node:fs';
import type { Logger } from '../logger';

/**
 * A retention file of this user's that this user may not read or write (its mode was changed,
 * e.g. `chmod 000`) still holds acked metrics intact: its mode is set back to 0600, with one
 * warning, instead of the file being quarantined as unreadable and its metrics never sent.
 * Another user's file is left as it is (then it cannot be opened, and is quarantined).
 */
export function restoreAccess(path: string, log: Logger): void {
  const uid = process.geteuid?.();
  for (const suffix of ['', '-wal', '-shm']) {
    const p = path + suffix;
    let mode: number;
    try {
      const st = statSync(p);
      if (!st.isFile() || st.uid !== uid) continue;
      mode = st.mode & 0o777;
    } catch {
      continue; // absent
    }
    if (readableAndWritable(p)) continue;
    try {
      chmodSync(p, 0o600);
      log.warn({ path: p, mode: mode.toString(8).padStart(4, '0') }, `retention file ${p} had mode ${mode.toString(8).padStart(4, '0')}: restored to 0600`);
    } catch {
      // not ours to change after all: opening it fails and it is quarantined
    }
  }
}

function readableAndWritable(path: string): boolean {
  try {
    accessSync(path, constants.R_OK | constants.W_OK);
    return true;
  } catch {
    return false;
  }
}
