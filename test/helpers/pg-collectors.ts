/**
 * Collectors on one PostgreSQL (DESIGN §11), for the scale-out tests: a migrated database, keys
 * made through the CLI, and collectors started on it with `--store URL` (the password from the
 * environment, never a flag), each on its own loopback address and the same agents' port, as
 * sidecars list them in `server_host`.
 */
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { COLLECTOR_CLI, type CollectorProc, collectorListening, runCollector } from './collector';
import type { PgServer } from './postgres';
import { Proc } from './procs';

export interface PgStore {
  url: string;
  env: Record<string, string>;
}

/** A new database on `pg`, migrated with `apm-collector migrate --store URL`. */
export async function migratedStore(pg: PgServer, name: string): Promise<PgStore> {
  const url = await pg.createDatabase(name);
  const r = await runCollector(['migrate', '--store', url], { env: pg.env });
  if (r.code !== 0) throw new Error(`migrate exited ${r.code}: ${r.stderr}`);
  return { url, env: pg.env };
}

/** `apm-collector keys create --store URL`: the key alone on the last line. */
export async function storeKey(store: PgStore, project: string): Promise<string> {
  const r = await runCollector(['keys', 'create', '--project', project, '--store', store.url], { env: store.env });
  if (r.code !== 0) throw new Error(`keys create exited ${r.code}: ${r.stderr}`);
  return (r.stdout.trim().split('\n').at(-1) as string).trim();
}

/** A port free on every address given (a collector on each of them will take it). */
export async function portFreeOn(hosts: string[]): Promise<number> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const port = await new Promise<number>((resolve, reject) => {
      const s = createServer();
      s.once('error', reject);
      s.listen(0, hosts[0], () => {
        const a = s.address();
        s.close(() => resolve(typeof a === 'object' && a !== null ? a.port : 0));
      });
    });
    const free = await Promise.all(
      hosts.map(
        (h) =>
          new Promise<boolean>((resolve) => {
            const s = createServer();
            s.once('error', () => resolve(false));
            s.listen(port, h, () => s.close(() => resolve(true)));
          }),
      ),
    );
    if (free.every(Boolean)) return port;
  }
  throw new Error(`no port free on ${hosts.join(', ')}`);
}

/** `apm-collector run --store URL` on `host:port` (agents) and `host:0` (HTTP). */
export function startPgCollector(store: PgStore, host: string, port: number, extra: string[] = []): Promise<CollectorProc> {
  const args = [COLLECTOR_CLI, 'run', '--store', store.url, '--host', host, '--port', String(port), '--http', `${host}:0`, ...extra];
  const p = new Proc(spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...store.env } })) as CollectorProc;
  return collectorListening(p, '');
}
