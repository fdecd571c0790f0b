import { keyFingerprint } from '@apm-sidecar/proto/upstream';
import type { CollectorStore } from './contract';

/**
 * Moving a collector's identities to another store (`apm-collector migrate --from-data-dir DIR
 * --store URL`: an SQLite collector's projects, access keys and read tokens into PostgreSQL), so
 * that its sidecars and API clients keep working unchanged. Stored data (points, traces) is not
 * copied: it ages out of the old store, which can be read until then.
 *
 *   projects      id, name and creation time as they were
 *   access keys   the same secrets (the sidecars' keys stay valid); a revoked key is copied and
 *                 revoked again at its revocation time (revokeKey), so it stays refused and listed
 *   read tokens   the active ones, by their hash (a token is never stored in clear, so the old
 *                 tokens keep working); revoked tokens are not copied (no hash is kept for them,
 *                 and they open nothing)
 *
 * Reading uses only the store contract; writing the rows as they are needs the import methods
 * (KeyImport), since createKey and createToken always make new secrets. Running it again adds
 * nothing twice. No secret or token is returned or logged: only counts.
 */

export interface KeyImport {
  /** True when added (false: a project with this id exists). */
  importProject(projectId: string, name: string, createdAt: number): Promise<boolean>;
  /** A key of an existing project, valid. True when added (false: this secret is stored already). */
  importKey(projectId: string, secret: Buffer, createdAt: number): Promise<boolean>;
  /** An active read token, by its hash. True when added (false: this token id exists). */
  importToken(tokenId: string, projectId: string | null, hash: Buffer, createdAt: number): Promise<boolean>;
}

export type KeySource = Pick<CollectorStore, 'location' | 'listKeys' | 'projectKeys' | 'listTokens' | 'activeTokens'>;
export type KeyTarget = Pick<CollectorStore, 'location' | 'revokeKey'> & KeyImport;

export interface CopiedKeys {
  /** Added to the target (what it already held is not counted). */
  projects: number;
  keys: number;
  tokens: number;
  /** Keys copied revoked, or revoked in the target because they were in the source. */
  revokedKeys: number;
  /** Revoked read tokens of the source, not copied. */
  skippedRevokedTokens: number;
}

export async function copyKeys(from: KeySource, to: KeyTarget): Promise<CopiedKeys> {
  const out: CopiedKeys = { projects: 0, keys: 0, tokens: 0, revokedKeys: 0, skippedRevokedTokens: 0 };
  // listKeys: one row per key with its project's name; a project with no key has nothing to copy.
  const listed = await from.listKeys();
  const projects = new Map<string, { name: string; createdAt: number }>();
  for (const k of listed) {
    const p = projects.get(k.projectId);
    if (p === undefined || k.createdAt < p.createdAt) projects.set(k.projectId, { name: k.name, createdAt: k.createdAt });
  }
  const keyCreatedAt = new Map(listed.map((k) => [k.fingerprint, k.createdAt]));
  for (const [projectId, p] of projects) {
    if (await to.importProject(projectId, p.name, p.createdAt)) out.projects++;
    for (const key of await from.projectKeys(projectId)) {
      const fingerprint = keyFingerprint(key.secret);
      if (await to.importKey(projectId, key.secret, keyCreatedAt.get(fingerprint) ?? p.createdAt)) out.keys++;
      if (key.revokedAt !== null) {
        const r = await to.revokeKey(fingerprint, key.revokedAt);
        if (r.alreadyRevokedAt === null) out.revokedKeys++;
      }
    }
  }
  const active = new Map((await from.activeTokens()).map((t) => [t.tokenId, t]));
  for (const row of await from.listTokens()) {
    const t = active.get(row.tokenId);
    if (row.revokedAt !== null || t === undefined) {
      out.skippedRevokedTokens++;
      continue;
    }
    if (await to.importToken(row.tokenId, row.projectId, t.hash, row.createdAt)) out.tokens++;
  }
  return out;
}
