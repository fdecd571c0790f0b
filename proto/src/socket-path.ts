import { join } from 'node:path';

/**
 * Where a sidecar's socket may be, in order of preference (DESIGN §3):
 *   /var/run/apm-sidecar/apm.sock            when that directory is writable
 *   $XDG_RUNTIME_DIR/apm-sidecar/apm.sock    when XDG_RUNTIME_DIR is set
 *   <tmpdir>/apm-sidecar-<uid>/apm.sock
 * Pure: the sidecar picks the first it can create, the shim the first that exists.
 */
export const SYSTEM_SOCKET_DIR = '/var/run/apm-sidecar';
export const SOCKET_FILE = 'apm.sock';

export function socketPathCandidates(env: Record<string, string | undefined>, uid: number, tmpdir: string): string[] {
  const out = [join(SYSTEM_SOCKET_DIR, SOCKET_FILE)];
  const xdg = env.XDG_RUNTIME_DIR;
  if (xdg !== undefined && xdg.length > 0) out.push(join(xdg, 'apm-sidecar', SOCKET_FILE));
  out.push(join(tmpdir, `apm-sidecar-${uid}`, SOCKET_FILE));
  return out;
}
