import { migrateStore } from '../store/open-store';
import { type StoreFlags, defaultDataDir, failStore, storeSpecOf } from './common';

/** apm-collector migrate: the store's schema brought to this version (DESIGN §11). */
export async function migrate(o: StoreFlags): Promise<void> {
  try {
    const r = await migrateStore(storeSpecOf(o), o.dataDir ?? defaultDataDir());
    process.stdout.write(
      r.from === r.to ? `${r.location}: schema version ${r.to}, nothing to do\n` : `${r.location}: schema migrated from version ${r.from} to ${r.to}\n`,
    );
  } catch (err) {
    failStore(err);
  }
}
