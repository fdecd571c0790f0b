import { lstatSync } from 'node:fs';

export const SOCKET_OWNER_CODE = 'ERR_SOCKET_OWNER';

/**
 * The shim talks only to a socket owned by its own uid, root, or the uid in
 * APM_SIDECAR_SOCKET_OWNER (DESIGN §4): a socket put in place by another user
 * would receive everything the app records. Checked with lstat right before
 * each connection attempt. Returns why the path is refused, or null.
 * A path that does not exist (yet) is left to connect() to report.
 */
export function socketOwnerProblem(path: string, env: Record<string, string | undefined> = process.env): string | null {
  const uid = process.getuid?.();
  if (uid === undefined) return null; // no uids on this platform
  let owner: number;
  try {
    owner = lstatSync(path).uid;
  } catch {
    return null;
  }
  if (owner === uid || owner === 0) return null;
  const allowed = env.APM_SIDECAR_SOCKET_OWNER;
  if (allowed !== undefined && /^\d+$/.test(allowed.trim()) && Number(allowed.trim()) === owner) return null;
  return `${path} is owned by uid ${owner}, not by this user (uid ${uid}), root or APM_SIDECAR_SOCKET_OWNER; not connecting`;
}
