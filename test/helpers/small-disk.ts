/**
 * A small filesystem for storage-fault tests: a tmpfs mounted in a private mount namespace that
 * only the test's processes enter (`unshare -m`, then `nsenter -m` for each process), so nothing
 * leaks to the machine: the mount goes away with the namespace's last process, and its holder
 * exits when the test's end of its stdin closes, even if the test dies. The test reaches the
 * files through /proc/<holder>/root. `nsenter` without a PID namespace execs the command, so a
 * started process's pid is the program's own (signals and RSS reach it directly).
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { COLLECTOR_CLI, type CollectorProc, collectorArgs, collectorListening } from './collector';
import { Proc, SIDECAR_CLI, type SidecarProc, sidecarListening, waitFor } from './procs';

/** Whether this machine lets the tests mount a tmpfs in a private mount namespace. */
export function mountAllowed(): boolean {
  const r = spawnSync('unshare', ['-m', 'sh', '-c', 'mount -t tmpfs -o size=64k tmpfs /mnt'], { encoding: 'utf8' });
  return r.status === 0;
}

export class SmallDisk {
  private constructor(
    readonly holder: Proc,
    readonly mnt: string,
  ) {}

  /** Mount a tmpfs of `size` (e.g. '4m') at `mnt` (created) in a new private mount namespace. */
  static async mount(mnt: string, size: string): Promise<SmallDisk> {
    mkdirSync(mnt, { recursive: true });
    const script = 'mount -t tmpfs -o "size=$1" tmpfs "$2" && chmod 755 "$2" && echo \'{"mounted":true}\' && exec cat >/dev/null';
    const child = spawn('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script, 'sh', size, mnt], { stdio: ['pipe', 'pipe', 'pipe'] });
    const holder = new Proc(child);
    await waitFor('the tmpfs to be mounted', () => {
      if (!holder.alive) throw new Error(`unshare/mount failed: ${holder.stderr}`);
      return holder.lines.some((l) => l.mounted === true);
    });
    return new SmallDisk(holder, mnt);
  }

  /** `name` under the mount point, as the namespace sees it (the path its processes use). */
  path(name: string): string {
    return join(this.mnt, name);
  }

  /** `name` under the mount point, reached from outside the namespace. */
  inside(name: string): string {
    return join(`/proc/${this.holder.pid}/root`, this.mnt, name);
  }

  /** Fill the filesystem to the last byte with the file `name`; returns the bytes written. */
  fill(name = 'filler'): number {
    const fd = openSync(this.inside(name), 'w');
    let n = 0;
    try {
      // Big writes first, then small ones for the tail: tmpfs has no reserved blocks.
      for (const size of [1 << 16, 512]) {
        const chunk = Buffer.alloc(size, 1);
        try {
          for (;;) n += writeSync(fd, chunk);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
        }
      }
    } finally {
      closeSync(fd);
    }
    return n;
  }

  /** Delete the filler: the space is back at once. */
  free(name = 'filler'): void {
    rmSync(this.inside(name), { force: true });
  }

  /** Run `command` inside the namespace (its paths are the namespace's). */
  spawn(command: string, args: string[], env: Record<string, string> = {}): ChildProcess {
    return spawn('nsenter', ['-t', String(this.holder.pid), '-m', '--', command, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    });
  }

  /** `apm-sidecar run` inside the namespace with `args` (which name the socket as `socket`); resolves once it listens. */
  async sidecar(socket: string, args: string[], env: Record<string, string> = {}): Promise<SidecarProc> {
    const p = new Proc(this.spawn(process.execPath, [SIDECAR_CLI, 'run', '--socket', socket, ...args], env)) as SidecarProc;
    p.socket = socket;
    await sidecarListening(p);
    return p;
  }

  /** An `apm-collector` command run to its end inside the namespace. */
  async collectorCommand(args: string[]): Promise<Proc> {
    const p = new Proc(this.spawn(process.execPath, [COLLECTOR_CLI, ...args]));
    await p.exited;
    return p;
  }

  /** `apm-collector run` inside the namespace on `dataDir` (a namespace path); resolves once it listens. */
  collector(dataDir: string, extra: string[] = []): Promise<CollectorProc> {
    return collectorListening(new Proc(this.spawn(process.execPath, collectorArgs(dataDir, extra))) as CollectorProc, dataDir);
  }

  async close(): Promise<void> {
    this.holder.child.stdin?.end();
    await this.holder.exited;
  }
}
