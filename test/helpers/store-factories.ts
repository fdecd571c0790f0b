import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { type CollectorStore, openStore } from '@apm-sidecar/collector';
import { migratePostgres } from '@apm-sidecar/collector/dist/store/pg/index';
import { type PgServer, postgresMissing, startPostgres } from './postgres';

/**
 * The stores the contract tests run against: each factory makes a fresh, empty location and
 * opens store instances on it as the collector does (openStore; several instances on one
 * location are several collectors sharing it). Every instance opened is closed, every server
 * stopped and every directory removed after the file's tests.
 */

export interface StoreOpts {
  rollupGraceMs?: number;
  seenPersistMs?: number;
}

export interface StoreFactory {
  name: 'sqlite' | 'postgres';
  /** Why this store's cases cannot run here (they are skipped saying so), or undefined. */
  skip(): string | undefined;
  /** A new, empty store location (migrated, for PostgreSQL). */
  fresh(): Promise<string>;
  /** An instance on `location`. */
  open(location: string, opts?: StoreOpts): Promise<CollectorStore>;
}

export function storeFactories(): StoreFactory[] {
  const opened: CollectorStore[] = [];
  const dirs: string[] = [];
  let server: Promise<PgServer> | undefined;
  let dbs = 0;
  after(async () => {
    for (const s of opened.splice(0)) await s.close().catch(() => {});
    if (server !== undefined) await (await server).stop();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  const sqlite: StoreFactory = {
    name: 'sqlite',
    skip: () => undefined,
    async fresh() {
      const dir = mkdtempSync(join(tmpdir(), 'apm-contract-'));
      dirs.push(dir);
      return dir;
    },
    async open(dir, opts = {}) {
      const s = await openStore({ kind: 'sqlite' }, dir, opts);
      opened.push(s);
      return s;
    },
  };

  const postgres: StoreFactory = {
    name: 'postgres',
    skip: postgresMissing,
    async fresh() {
      server ??= startPostgres().then((pg) => {
        // The stores take the password from the environment, as a collector does.
        process.env.PGPASSWORD = pg.password;
        return pg;
      });
      const url = await (await server).createDatabase(`contract_${++dbs}`);
      await migratePostgres(url);
      return url;
    },
    async open(url, opts = {}) {
      const s = await openStore({ kind: 'postgres', url }, '', { ...opts, poolSize: 4 });
      opened.push(s);
      return s;
    },
  };
  return [sqlite, postgres];
}
