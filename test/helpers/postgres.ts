import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { constants, tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import type { TestContext } from 'node:test';
import { Client } from 'pg';

/**
 * A throwaway PostgreSQL server for tests (issue 12): `initdb` into a temporary directory and
 * `postgres` started directly, as user `nobody` when the tests run as root (PostgreSQL refuses
 * to run as root), on a free loopback TCP port with its Unix socket in a private directory.
 * Password authentication (scram-sha-256), so the clients exercise PGPASSWORD. No system
 * service, nothing written outside the directory, and nothing left running: stop() (and, as a
 * last resort, this process exiting) kills the server and its children and removes the directory.
 */

export interface PgServer {
  /** postgres://USER@127.0.0.1:PORT/postgres (no password: it is in `env`). */
  readonly url: string;
  /** The TCP host (127.0.0.1). */
  readonly host: string;
  /** The directory of the server's Unix socket (a `?host=` for URLs). */
  readonly socketDir: string;
  readonly port: number;
  readonly user: string;
  readonly password: string;
  /** Environment for clients: PGPASSWORD (and PGUSER), to merge into a child's env. */
  readonly env: Record<string, string>;
  /** The postmaster's pid. */
  readonly pid: number;
  /** The temporary directory holding the data, the socket and the password file. */
  readonly dir: string;
  /** The URL of database `name` on this server. */
  urlFor(name: string): string;
  /** Create database `name` (a new, empty one) and return its URL. */
  createDatabase(name: string): Promise<string>;
  /** Stop the server (SIGINT, then SIGKILL of it and its children) and remove its directory. Safe to call twice. */
  stop(): Promise<void>;
}

export interface PgBinaries {
  initdb: string;
  postgres: string;
}

const INSTALL_HINT = 'PostgreSQL is not installed: make test-deps installs it (apt-get install postgresql)';

/**
 * The server binaries: in $APM_POSTGRES_BINDIR when set (and only there), else the highest
 * /usr/lib/postgresql/<version>/bin, else initdb and postgres on PATH; null when missing.
 */
export function postgresBinaries(): PgBinaries | null {
  const chosen = process.env.APM_POSTGRES_BINDIR;
  if (chosen !== undefined && chosen !== '') {
    const b = { initdb: join(chosen, 'initdb'), postgres: join(chosen, 'postgres') };
    return existsSync(b.initdb) && existsSync(b.postgres) ? b : null;
  }
  const base = '/usr/lib/postgresql';
  if (existsSync(base)) {
    const versions = readdirSync(base)
      .filter((v) => /^\d+(\.\d+)?$/.test(v))
      .sort((a, b) => Number(b) - Number(a));
    for (const v of versions) {
      const bin = join(base, v, 'bin');
      if (existsSync(join(bin, 'initdb')) && existsSync(join(bin, 'postgres'))) return { initdb: join(bin, 'initdb'), postgres: join(bin, 'postgres') };
    }
  }
  const onPath = (name: string) =>
    (process.env.PATH ?? '')
      .split(delimiter)
      .map((d) => join(d, name))
      .find((p) => existsSync(p));
  const initdb = onPath('initdb');
  const postgres = onPath('postgres');
  return initdb !== undefined && postgres !== undefined ? { initdb, postgres } : null;
}

/** Is a missing PostgreSQL a failure (APM_REQUIRE_POSTGRES=1, as `make test` sets) rather than a skip? */
function required(): boolean {
  return process.env.APM_REQUIRE_POSTGRES === '1';
}

/**
 * Why the PostgreSQL tests cannot run here (a message for t.skip / describe's skip), or undefined
 * when they can. With APM_REQUIRE_POSTGRES=1 a missing PostgreSQL throws instead: nothing is
 * silently skipped where it must run.
 */
export function postgresMissing(): string | undefined {
  if (postgresBinaries() !== null) return undefined;
  if (required()) throw new Error(`${INSTALL_HINT}, and APM_REQUIRE_POSTGRES=1 requires it`);
  return `${INSTALL_HINT}; test skipped`;
}

/** Start a server for test `t`, or skip `t` saying why (null). Stopped after the test. */
export async function postgresFor(t: TestContext): Promise<PgServer | null> {
  const missing = postgresMissing();
  if (missing !== undefined) {
    t.skip(missing);
    return null;
  }
  const pg = await startPostgres();
  t.after(() => pg.stop());
  return pg;
}

/** Servers not stopped yet (their postmasters' pids) and their directories: killed and removed when this process exits. */
const postmasters = new Set<number>();
const dirs = new Set<string>();
let exitHooked = false;

function kill(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

/**
 * The postmaster and its children (backends, checkpointer, …). Each child of a postmaster is
 * the leader of a process group of its own (PostgreSQL calls setsid()), so they are found by
 * parent pid, not by process group.
 */
export function serverProcesses(postmasterPid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      // pid (comm) state ppid …: comm may hold spaces and parentheses, so split after the last ')'.
      const [state, ppid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // A zombie is dead already, waiting for its parent (or init) to reap it.
      if (state !== 'Z' && (Number(name) === postmasterPid || Number(ppid) === postmasterPid)) out.push(Number(name));
    } catch {
      // the process went meanwhile
    }
  }
  return out;
}

/** SIGKILL the postmaster and its children at once (a child outliving its postmaster would keep running a while). */
function killServer(postmasterPid: number): void {
  for (const pid of serverProcesses(postmasterPid)) kill(pid, 'SIGKILL');
}

function hookExit(): void {
  if (exitHooked) return;
  exitHooked = true;
  const reap = () => {
    for (const pid of postmasters) killServer(pid);
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
    postmasters.clear();
    dirs.clear();
  };
  process.on('exit', reap);
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      reap();
      process.exit(128 + (constants.signals[sig] ?? 0));
    });
  }
}

/** The uid/gid to run the server as: nobody when this process is root, else this process's own. */
function serverUser(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('nobody:'));
  const f = line?.split(':');
  if (f === undefined || f.length < 4) throw new Error('running as root, and no user "nobody" to run PostgreSQL as');
  return { uid: Number(f[2]), gid: Number(f[3]) };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr !== null ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

/** Run a program to completion; rejects with its output when it fails. */
function run(cmd: string, args: string[], user: { uid: number; gid: number } | undefined, env: NodeJS.ProcessEnv): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env, ...user });
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.once('error', reject);
    child.once('exit', (code, signal) => (code === 0 ? resolve() : reject(new Error(`${cmd} exited with ${code ?? signal}:\n${out.slice(-4000)}`))));
  });
}

/** Wait for the postmaster's "ready to accept connections", or its exit (rejects with its log). */
function whenReady(child: ChildProcess, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let log = '';
    const timer = setTimeout(() => done(new Error(`PostgreSQL not ready after ${timeoutMs} ms:\n${log.slice(-4000)}`)), timeoutMs);
    const onData = (d: Buffer) => {
      log += d.toString();
      if (log.includes('ready to accept connections')) done();
    };
    const onExit = (code: number | null, signal: NodeJS.Signals | null) => done(new Error(`PostgreSQL exited with ${code ?? signal}:\n${log.slice(-4000)}`));
    function done(err?: Error): void {
      clearTimeout(timer);
      child.stderr?.off('data', onData);
      child.off('exit', onExit);
      // Keep draining the log so the server never blocks on a full pipe.
      child.stderr?.resume();
      if (err === undefined) resolve();
      else reject(err);
    }
    child.stderr?.on('data', onData);
    child.once('exit', onExit);
  });
}

function exited(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), timeoutMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

/** Start a throwaway server (see the file's comment). Throws when PostgreSQL is not installed. */
export async function startPostgres(opts: { startTimeoutMs?: number } = {}): Promise<PgServer> {
  const bins = postgresBinaries();
  if (bins === null) throw new Error(INSTALL_HINT);
  const user = serverUser();
  const dir = mkdtempSync(join(tmpdir(), 'apm-pg-'));
  hookExit();
  dirs.add(dir);
  try {
    const dataDir = join(dir, 'data');
    const socketDir = join(dir, 'sock');
    mkdirSync(socketDir, { mode: 0o700 });
    const password = randomBytes(18).toString('base64url');
    const pwfile = join(dir, 'pwfile');
    writeFileSync(pwfile, `${password}\n`, { mode: 0o600 });
    if (user !== undefined) for (const p of [dir, socketDir, pwfile]) chownSync(p, user.uid, user.gid);
    const env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C', LC_ALL: 'C', TZ: 'UTC' };
    const dbUser = 'apm';
    await run(
      bins.initdb,
      ['-D', dataDir, '-U', dbUser, `--pwfile=${pwfile}`, '--auth=scram-sha-256', '--no-sync', '--encoding=UTF8', '--locale=C', '--no-instructions'],
      user,
      env,
    );
    rmSync(pwfile, { force: true });
    let lastErr: unknown;
    for (let attempt = 0; attempt < 3; attempt++) {
      const port = await freePort();
      const child = spawn(
        bins.postgres,
        [
          '-D',
          dataDir,
          '-p',
          String(port),
          '-k',
          socketDir,
          '-c',
          'listen_addresses=127.0.0.1',
          '-c',
          'unix_socket_permissions=0700',
          // A throwaway server: durability is not what these tests measure.
          '-c',
          'fsync=off',
          '-c',
          'synchronous_commit=off',
          '-c',
          'full_page_writes=off',
          '-c',
          'max_connections=200',
          '-c',
          'logging_collector=off',
        ],
        { stdio: ['ignore', 'ignore', 'pipe'], env, ...user },
      );
      const pid = child.pid;
      if (pid === undefined) throw new Error('could not start postgres');
      postmasters.add(pid);
      child.unref();
      (child.stderr as unknown as { unref?: () => void } | null)?.unref?.();
      try {
        await whenReady(child, opts.startTimeoutMs ?? 30_000);
      } catch (err) {
        lastErr = err;
        killServer(pid);
        await exited(child, 5000);
        postmasters.delete(pid);
        // Another process took the port between freePort() and the bind: try another one.
        if (err instanceof Error && /could not (bind|create listen)/i.test(err.message)) continue;
        throw err;
      }
      return server({ child, pid, port, dir, socketDir, user: dbUser, password });
    }
    throw lastErr;
  } catch (err) {
    dirs.delete(dir);
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

function server(s: { child: ChildProcess; pid: number; port: number; dir: string; socketDir: string; user: string; password: string }): PgServer {
  const host = '127.0.0.1';
  const urlFor = (name: string) => `postgres://${s.user}@${host}:${s.port}/${name}`;
  let stopping: Promise<void> | undefined;
  return {
    url: urlFor('postgres'),
    host,
    socketDir: s.socketDir,
    port: s.port,
    user: s.user,
    password: s.password,
    env: { PGPASSWORD: s.password, PGUSER: s.user },
    pid: s.pid,
    dir: s.dir,
    urlFor,
    async createDatabase(name: string): Promise<string> {
      if (!/^[a-z_][a-z0-9_]{0,62}$/.test(name)) throw new Error(`not a plain database name: ${name}`);
      const c = new Client({ host, port: s.port, user: s.user, password: s.password, database: 'postgres' });
      await c.connect();
      try {
        await c.query(`CREATE DATABASE ${name}`);
      } finally {
        await c.end();
      }
      return urlFor(name);
    },
    stop(): Promise<void> {
      stopping ??= (async () => {
        // SIGINT: PostgreSQL's fast shutdown (ends sessions, writes a checkpoint, exits after its children).
        kill(s.pid, 'SIGINT');
        if (!(await exited(s.child, 10_000))) killServer(s.pid);
        await exited(s.child, 5000);
        for (let i = 0; i < 100 && serverProcesses(s.pid).length > 0; i++) {
          killServer(s.pid);
          await new Promise((r) => setTimeout(r, 20));
        }
        postmasters.delete(s.pid);
        rmSync(s.dir, { recursive: true, force: true });
        dirs.delete(s.dir);
      })();
      return stopping;
    },
  };
}
