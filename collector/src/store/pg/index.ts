import type { CollectorStore } from '../contract';

/** PostgreSQL arrives with the pg store; until then a postgres:// store is refused plainly. */
export class PostgresStore {
  static async open(_url: string, _opts: { rollupGraceMs?: number; seenPersistMs?: number; poolSize?: number }): Promise<CollectorStore> {
    throw new Error('this build has no PostgreSQL store');
  }
}
export async function migratePostgres(_url: string): Promise<{ from: number; to: number }> {
  throw new Error('this build has no PostgreSQL store');
}
export function redactedUrl(url: string): string {
  return url;
}
