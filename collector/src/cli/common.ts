import { InvalidArgumentError } from 'commander';
import { ApmError } from '@apm-sidecar/proto';
import { KeyNotFoundError, ProjectNameError, UnknownProjectError, UnknownTokenError } from '../errors';
import type { CollectorStore } from '../store/contract';
import { type StoreSpec, openStore, parseStoreSpec } from '../store/open-store';

/** What the commands of apm-collector share: exit codes, argument parsers, opening the store, printing lists. */

/** Exit codes: 0 ok, 1 runtime failure, 2 bad configuration or usage. */
export const EXIT_RUNTIME = 1;
export const EXIT_USAGE = 2;

export function defaultDataDir(env: NodeJS.ProcessEnv = process.env): string {
  const d = env.APM_COLLECTOR_DATA_DIR;
  return d !== undefined && d.length > 0 ? d : './.data/collector';
}

export function parsePort(v: string): number {
  const n = /^\d+$/.test(v) ? Number(v) : Number.NaN;
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError('expected a port from 0 to 65535.');
  return n;
}

export function parseCount(v: string): number {
  const n = /^\d+$/.test(v) ? Number(v) : Number.NaN;
  if (!Number.isSafeInteger(n)) throw new InvalidArgumentError('expected a non-negative integer (0 = unlimited).');
  return n;
}

/** HOST:PORT, [IPv6]:PORT. */
export function parseHostPort(v: string): { host: string; port: number } {
  const m = /^\[([0-9a-fA-F:.]+)\]:(\d+)$/.exec(v) ?? /^([^:\s[\]]+):(\d+)$/.exec(v);
  if (m === null) throw new InvalidArgumentError('expected HOST:PORT (for example 127.0.0.1:6680 or [::1]:6680).');
  return { host: m[1] as string, port: parsePort(m[2] as string) };
}

export function collect(v: string, prev: string[] = []): string[] {
  return [...prev, v];
}

export function die(code: number, message: string): never {
  process.stderr.write(`apm-collector: ${message}\n`);
  process.exit(code);
}

export function failStore(err: unknown): never {
  if (err instanceof ProjectNameError || err instanceof UnknownProjectError || err instanceof UnknownTokenError || err instanceof KeyNotFoundError)
    die(EXIT_USAGE, `${err.message} [${err.code}]`);
  if (err instanceof ApmError) die(EXIT_RUNTIME, `${err.message} [${err.code}]`);
  die(EXIT_RUNTIME, err instanceof Error ? err.message : String(err));
}

export function modeText(mode: number): string {
  return mode.toString(8).padStart(4, '0');
}

/** Where a key, token or migrate command works: --store (or $APM_COLLECTOR_STORE), and --data-dir for SQLite. */
export interface StoreFlags {
  store?: string;
  dataDir?: string;
}

export function parseStore(v: string): string {
  try {
    parseStoreSpec(v);
  } catch (err) {
    throw new InvalidArgumentError(`${(err as Error).message}.`);
  }
  return v;
}

export function storeSpecOf(o: StoreFlags, env: NodeJS.ProcessEnv = process.env): StoreSpec {
  try {
    return parseStoreSpec(o.store ?? env.APM_COLLECTOR_STORE);
  } catch (err) {
    die(EXIT_USAGE, `--store / APM_COLLECTOR_STORE: ${(err as Error).message}`);
  }
}

/** For the key and token commands: a data directory tightened to 0700 is reported on stderr. */
async function openCliStore(o: StoreFlags): Promise<CollectorStore> {
  try {
    return await openStore(storeSpecOf(o), o.dataDir ?? defaultDataDir(), {
      onDirTightened: (dir, old) => process.stderr.write(`apm-collector: data directory ${dir} had mode ${modeText(old)}; tightened to 0700\n`),
      onFileModeRestored: (file, old) => process.stderr.write(`apm-collector: ${file} had mode ${modeText(old)}; restored to 0600\n`),
      poolSize: 1,
    });
  } catch (err) {
    failStore(err);
  }
}

/** Run `fn` on the store the flags name, closing it after; a failure ends the process (failStore). */
export async function withStore<T>(o: StoreFlags, fn: (store: CollectorStore) => Promise<T>): Promise<T> {
  const store = await openCliStore(o);
  let result: T;
  try {
    result = await fn(store);
  } catch (err) {
    await store.close().catch(() => {});
    failStore(err);
  }
  await store.close();
  return result;
}

const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());

/**
 * A list command's output: JSON (times as ISO strings), a note when there is nothing, or a
 * table whose columns are padded to their widest cell (the last one is not).
 */
export function printList<T extends { createdAt: number; revokedAt: number | null }>(
  rows: T[],
  opts: { json: boolean; empty: string; header: string[]; cells: (row: T, iso: (ms: number | null) => string | null) => string[] },
): void {
  if (opts.json) {
    process.stdout.write(
      `${JSON.stringify(
        rows.map((r) => ({ ...r, createdAt: iso(r.createdAt), revokedAt: iso(r.revokedAt) })),
        null,
        2,
      )}\n`,
    );
    return;
  }
  if (rows.length === 0) {
    process.stdout.write(`${opts.empty}\n`);
    return;
  }
  const table = [opts.header, ...rows.map((r) => opts.cells(r, iso))];
  const last = opts.header.length - 1;
  const widths = opts.header.map((_, i) => Math.max(...table.map((r) => (r[i] as string).length)));
  for (const r of table) process.stdout.write(`${r.map((c, i) => (i < last ? c.padEnd(widths[i] as number) : c)).join('  ')}\n`);
}
