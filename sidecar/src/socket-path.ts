import { type Stats, accessSync, chmodSync, chownSync, constants, existsSync, lstatSync, mkdirSync, readFileSync, statSync, unlinkSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname } from 'node:path';
import { ApmError, socketPathCandidates } from '@apm-sidecar/proto';

export class SocketPathError extends ApmError {
  constructor(code: string, message: string) {
    super(code, message);
  }
}

function writableOrCreatable(dir: string): boolean {
  try {
    if (existsSync(dir)) {
      accessSync(dir, constants.W_OK | constants.X_OK);
      return true;
    }
    accessSync(dirname(dir), constants.W_OK | constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** DESIGN §3: the explicit path, else the first default location whose directory we can use. */
export function resolveSocketPath(explicit: string): string {
  if (explicit.length > 0) return explicit;
  const env = process.env.APM_SIDECAR_SOCKET;
  if (env !== undefined && env.length > 0) return env;
  const candidates = socketPathCandidates(process.env, process.getuid?.() ?? 0, tmpdir());
  return candidates.find((p) => writableOrCreatable(dirname(p))) ?? (candidates[candidates.length - 1] as string);
}

/** Resolve a group name or numeric id (only numeric ids and names in /etc/group). */
function groupId(group: string): number {
  if (/^\d+$/.test(group)) return Number(group);
  try {
    for (const line of readFileSync('/etc/group', 'utf8').split('\n')) {
      const [name, , gid] = line.split(':');
      if (name === group && gid !== undefined) return Number(gid);
    }
  } catch {
    // fall through
  }
  throw new SocketPathError('ERR_SOCKET_GROUP', `socket_group: unknown group "${group}"`);
}

/** Create the socket directory: 0700, or 0770 owned by `group` when one is given. */
export function prepareSocketDir(path: string, group: string): number | null {
  const dir = dirname(path);
  const gid = group.length > 0 ? groupId(group) : null;
  const mode = gid === null ? 0o700 : 0o770;
  if (!existsSync(dir)) {
    mkdirSync(dir, { recursive: true, mode });
    chmodSync(dir, mode);
    if (gid !== null) chownSync(dir, process.getuid?.() ?? 0, gid);
  } else if (!statSync(dir).isDirectory()) {
    throw new SocketPathError('ERR_SOCKET_PATH', `socket directory ${dir} is not a directory`);
  }
  return gid;
}

/** Is something accepting connections on this socket file? */
export function probeSocket(path: string, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection({ path });
    const t = setTimeout(() => {
      s.destroy();
      resolve(true); // it exists and did not refuse: treat a hung listener as live
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(t);
      s.destroy();
      resolve(true);
    });
    s.once('error', () => {
      clearTimeout(t);
      resolve(false);
    });
  });
}

/**
 * Make `path` free to listen on: a stale socket file (nothing listening) is
 * removed; a live one, or a path that is not a socket, is an error.
 * Returns true when a stale file was replaced.
 */
export async function claimSocketPath(path: string): Promise<boolean> {
  let st: Stats;
  try {
    st = lstatSync(path);
  } catch {
    return false;
  }
  if (!st.isSocket()) throw new SocketPathError('ERR_SOCKET_PATH', `${path} exists and is not a socket; refusing to replace it`);
  if (await probeSocket(path)) {
    throw new SocketPathError('ERR_SOCKET_IN_USE', `another sidecar is already listening on ${path}`);
  }
  unlinkSync(path);
  return true;
}
