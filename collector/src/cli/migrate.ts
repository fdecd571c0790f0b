import { copyKeys } from '../store/copy-keys';
import { migrateStore, openStore } from '../store/open-store';
import { type StoreFlags, defaultDataDir, failStore, storeSpecOf } from './common';

/**
 * apm-collector migrate: the store's schema brought to this version (DESIGN §11); with
 * --from-data-dir, an SQLite collector's projects, access keys and read tokens copied into the
 * store as they are, so its sidecars and API clients keep working (counts printed, never a secret).
 */
export async function migrate(o: StoreFlags & { fromDataDir?: string }): Promise<void> {
  try {
    const spec = storeSpecOf(o);
    const r = await migrateStore(spec, o.dataDir ?? defaultDataDir());
    process.stdout.write(
      r.from === r.to ? `${r.location}: schema version ${r.to}, nothing to do\n` : `${r.location}: schema migrated from version ${r.from} to ${r.to}\n`,
    );
    if (o.fromDataDir === undefined) return;
    const from = await openStore({ kind: 'sqlite' }, o.fromDataDir);
    try {
      const to = await openStore(spec, o.dataDir ?? defaultDataDir(), { poolSize: 1 });
      try {
        const c = await copyKeys(from, to);
        process.stdout.write(
          `copied from ${from.location}: ${c.projects} projects, ${c.keys} access keys (${c.revokedKeys} of them revoked), ${c.tokens} read tokens` +
            `${c.skippedRevokedTokens > 0 ? `; ${c.skippedRevokedTokens} revoked read tokens not copied` : ''}\n`,
        );
      } finally {
        await to.close();
      }
    } finally {
      await from.close();
    }
  } catch (err) {
    failStore(err);
  }
}
