import {
  type Stats,
  accessSync,
  chmodSync,
  chownSync,
  closeSync,
  constants,
  existsSync,
  fchmodSync,
  fchownSync,
  fstatSync,
  lstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  unlinkSync,
} from 'node:fs';
import type { Server } from 'node:net';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname } from 'node:path';
import { ApmError, socketPathCandidates } from '@apm-sidecar/proto';

/** The family of socket path refusals; each kind below has its own code. */
export class SocketPathError extends ApmError {
  constructor(code: string, message: string) {
    super(code, message);
  }
}

/** `socket_group` names no group of this machine. */
export class SocketGroupError extends SocketPathError {
  constructor(group: string) {
    super('ERR_SOCKET_GROUP', `socket_group: unknown group "${group}"`);
  }
}

/** A socket path, or its directory, exists as something else (not a socket, not a directory): never replaced. */
export class SocketPathKindError extends SocketPathError {
  constructor(message: string) {
    super('ERR_SOCKET_PATH', message);
  }
}

/** The socket directory is a symbolic link or a shared (sticky) directory: another user could swap the socket. */
export class SocketDirUnsafeError extends SocketPathError {
  constructor(message: string) {
    super('ERR_SOCKET_DIR_UNSAFE', message);
  }
}

/** The socket directory belongs to another user, who could replace the socket. */
export class SocketDirOwnerError extends SocketPathError {
  constructor(message: string) {
    super('ERR_SOCKET_DIR_OWNER', message);
  }
}

/** Another sidecar already answers on the socket path; this one refuses to start. */
export class SocketInUseError extends SocketPathError {
  constructor(message: string) {
    super('ERR_SOCKET_IN_USE', message);
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
  throw new SocketGroupError(group);
}

export interface SocketDir {
  /** The group given access (socket_group), or null for owner only. */
  gid: number | null;
  /** Set when the directory existed with a wider mode and was tightened. */
  tightened: { dir: string; from: number; to: number } | null;
}

const octal = (m: number): string => `0${(m & 0o7777).toString(8)}`;

/**
 * The socket directory, made private: 0700, or 0770 with `group`. Whoever can
 * write to it can move the live socket away and put their own in its place,
 * so a directory owned by another user, a symlink, or a shared (sticky, e.g.
 * /tmp) directory is refused; one of ours with a wider mode is tightened.
 * Checked and fixed through one descriptor opened without following links,
 * so the directory checked is the directory changed.
 */
export function prepareSocketDir(path: string, group: string): SocketDir {
  const dir = dirname(path);
  const gid = group.length > 0 ? groupId(group) : null;
  const mode = gid === null ? 0o700 : 0o770;
  const uid = process.getuid?.() ?? 0;
  const created = !existsSync(dir);
  if (created) mkdirSync(dir, { recursive: true, mode });
  let fd: number;
  try {
    fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // With O_DIRECTORY, Linux reports a symlink as ENOTDIR rather than ELOOP.
    if (code === 'ELOOP' || (code === 'ENOTDIR' && lstatSync(dir).isSymbolicLink()))
      throw new SocketDirUnsafeError(`socket directory ${dir} is a symbolic link; refusing it`);
    if (code === 'ENOTDIR') throw new SocketPathKindError(`socket directory ${dir} is not a directory`);
    throw err;
  }
  try {
    const st = fstatSync(fd);
    if (st.uid !== uid) {
      throw new SocketDirOwnerError(
        `socket directory ${dir} is owned by uid ${st.uid}, not by this user (uid ${uid}): another user could replace the socket; remove it or choose another --socket`,
      );
    }
    if ((st.mode & 0o1000) !== 0) {
      throw new SocketDirUnsafeError(`socket directory ${dir} is a shared (sticky) directory; use a directory of its own`);
    }
    if (gid !== null && st.gid !== gid) fchownSync(fd, uid, gid);
    const current = st.mode & 0o7777;
    // One we created gets exactly `mode` (the umask may have taken bits off). One that was there
    // only loses what `mode` does not allow: a narrower one (e.g. systemd's 0750) stays narrower.
    const wanted = created ? mode : current & mode;
    let tightened: SocketDir['tightened'] = null;
    if (current !== wanted) {
      fchmodSync(fd, wanted);
      if ((current & ~wanted) !== 0) tightened = { dir, from: current, to: wanted };
    }
    return { gid, tightened };
  } finally {
    closeSync(fd);
  }
}

/** For log lines: the modes in octal. */
export function describeTightening(t: NonNullable<SocketDir['tightened']>): string {
  return `tightened socket directory ${t.dir} from ${octal(t.from)} to ${octal(t.to)}`;
}

/**
 * Listen on `path` so that the socket file never has a wider mode than
 * configured, whatever the umask: bind() runs (synchronously, inside listen())
 * under umask 0177, so the file is created 0600; the group, when given, is set
 * before the mode is widened to 0660.
 */
export async function listenPrivately(server: Server, path: string, gid: number | null): Promise<void> {
  const previous = process.umask(0o177);
  let listening: Promise<void>;
  try {
    listening = new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } finally {
    process.umask(previous);
  }
  await listening;
  if (gid !== null) {
    chownSync(path, process.getuid?.() ?? 0, gid);
    chmodSync(path, 0o660);
  } else {
    chmodSync(path, 0o600);
  }
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
  if (!st.isSocket()) throw new SocketPathKindError(`${path} exists and is not a socket; refusing to replace it`);
  if (await probeSocket(path)) {
    throw new SocketInUseError(`another sidecar is already listening on ${path}`);
  }
  unlinkSync(path);
  return true;
}
