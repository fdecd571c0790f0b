import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';

export const ROOT = resolve(__dirname, '..', '..', '..');
export const SIDECAR_CLI = join(ROOT, 'sidecar', 'dist', 'cli.js');
export const FIXTURES = join(ROOT, 'test', 'dist', 'helpers', 'apps');

/** A temporary directory removed by cleanup(). Socket paths must stay under 108 bytes. */
export function tempDir(prefix = 'apm-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Poll `fn` until it returns a truthy value or the time is up (then throw with `what`). */
export async function waitFor<T>(what: string, fn: () => T | Promise<T>, timeoutMs = 10000, everyMs = 20): Promise<NonNullable<T>> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as NonNullable<T>;
    } catch (err) {
      last = err;
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await sleep(everyMs);
  }
}

/** A child process whose stdout JSON lines are collected as they arrive. */
export class Proc {
  readonly lines: Record<string, unknown>[] = [];
  readonly raw: string[] = [];
  stderr = '';
  exitCode: number | null = null;
  signal: NodeJS.Signals | null = null;
  readonly exited: Promise<number | null>;

  constructor(readonly child: ChildProcess) {
    const rl = createInterface({ input: child.stdout as NodeJS.ReadableStream });
    rl.on('line', (line) => {
      this.raw.push(line);
      try {
        this.lines.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // not JSON: kept in raw
      }
    });
    child.stderr?.on('data', (d: Buffer) => {
      this.stderr += d.toString();
    });
    this.exited = new Promise((resolve) => {
      child.on('exit', (code, signal) => {
        this.exitCode = code;
        this.signal = signal;
        resolve(code);
      });
    });
  }

  get pid(): number {
    return this.child.pid as number;
  }

  get alive(): boolean {
    return this.exitCode === null && this.signal === null;
  }

  /** JSON lines whose `pack` field is `kind` (debug transport output). */
  packs(kind?: string): Record<string, unknown>[] {
    return this.lines.filter((l) => typeof l.pack === 'string' && (kind === undefined || l.pack === kind));
  }

  logs(msg?: string | RegExp): Record<string, unknown>[] {
    return this.lines.filter(
      (l) =>
        typeof l.level === 'number' && (msg === undefined || (typeof l.msg === 'string' && (typeof msg === 'string' ? l.msg.includes(msg) : msg.test(l.msg)))),
    );
  }

  waitLine(what: string, pred: (l: Record<string, unknown>) => boolean, timeoutMs = 10000): Promise<Record<string, unknown>> {
    return waitFor(what, () => this.lines.find(pred), timeoutMs);
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<number | null> {
    if (this.alive) this.child.kill(signal);
    return this.exited;
  }
}

export interface SidecarProc extends Proc {
  socket: string;
}

/** Start `apm-sidecar run` with the debug transport on a socket in `dir`; resolves once it listens. */
export async function startSidecar(dir: string, extra: string[] = [], env: Record<string, string> = {}): Promise<SidecarProc> {
  const socket = join(dir, 'apm.sock');
  const transport = extra.includes('--transport') ? [] : ['--transport', 'debug'];
  const agent = extra.some((a) => a.startsWith('agent_id=')) ? [] : ['--set', 'agent_id=test-agent'];
  const data = extra.includes('--data-dir') ? [] : ['--data-dir', `${dir}.data`];
  const args = [SIDECAR_CLI, 'run', ...transport, '--socket', socket, ...data, ...agent, ...extra];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  const p = new Proc(child) as SidecarProc;
  p.socket = socket;
  await sidecarListening(p);
  return p;
}

/** Resolves once a starting sidecar logged that it listens for shims; rejects if it exits first. */
export async function sidecarListening(p: Proc): Promise<void> {
  await waitFor(
    'the sidecar to listen',
    () => {
      if (!p.alive) throw new Error(`sidecar exited ${p.exitCode}: ${p.stderr}`);
      return p.logs('listening for shims').length > 0;
    },
    15000,
  );
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run a command to completion and collect its output. `env` adds to (or, with undefined, removes from) this process's environment. */
export function runToEnd(command: string, args: string[], env: Record<string, string | undefined> = {}, cwd?: string): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env }, cwd });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Run an `apm-sidecar` command to completion. */
export function runCli(args: string[], env: Record<string, string | undefined> = {}): Promise<CliResult> {
  return runToEnd(process.execPath, [SIDECAR_CLI, ...args], env);
}

/** `apm-sidecar status --json` of the sidecar on `socket`, through the real CLI; fails the test when it does not answer. */
export async function statusJson(socket: string): Promise<Record<string, any>> {
  const r = await runCli(['status', '--json', '--socket', socket]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Record<string, any>;
}

/** Start a fixture app (test/helpers/apps/NAME.js) with arguments in the environment. */
export function startApp(name: string, env: Record<string, string>): Proc {
  const child = spawn(process.execPath, [join(FIXTURES, `${name}.js`)], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  return new Proc(child);
}

/** Sum a field over every point of every metrics pack for a metric name. */
export function pointsOf(p: Proc, name: string): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const pack of p.packs('metrics')) {
    for (const pt of pack.points as Record<string, unknown>[]) if (pt.name === name) out.push(pt);
  }
  return out;
}

export function totalCount(p: Proc, name: string): number {
  return pointsOf(p, name).reduce((a, pt) => a + (pt.count as number), 0);
}
