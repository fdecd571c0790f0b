import { randomBytes } from 'node:crypto';
import type { Pool, PoolClient } from 'pg';
import { keyFingerprint } from '@apm-sidecar/proto/upstream';
import { KeyNotFoundError, ProjectNameError, TokenIdExhaustedError } from '../../errors';
import type { ProjectKey } from '../../types';
import type { RevokedKey } from '../contract';
import { type CreatedKey, type KeyRow, ambiguousProjectName, checkProjectName, newProjectId, projectSlug } from '../keys';
import { type ActiveToken, type ReadTokenRow, hashToken, newToken } from '../read-tokens';
import { KEY_LOCK, inTransaction } from './tx';

/**
 * Projects, access keys and the API's read tokens on PostgreSQL, as store/keys.ts and
 * store/read-tokens.ts keep them in SQLite (the same rules, from their exported helpers).
 * Every collector polls revokedKeyIds() and reads activeTokens() per request, so a revocation
 * made through any of them, or the CLI, takes effect on all.
 */

interface KeyDbRow {
  id: number;
  project_id: string;
  name: string;
  secret: Buffer;
  created_at: number;
  revoked_at: number | null;
}

interface TokenDbRow {
  token_id: string;
  project_id: string | null;
  hash: Buffer;
  created_at: number;
  revoked_at: number | null;
}

const LIST_KEYS =
  'SELECT k.id, k.project_id, p.name, k.secret, k.created_at, k.revoked_at FROM keys k JOIN projects p USING (project_id) ORDER BY k.created_at, k.id';

export class PgKeys {
  constructor(private readonly pool: Pool) {}

  /** Rows as they are (copy-keys.ts): an existing one (same project id, secret or token id) is left alone. */
  async importProject(projectId: string, name: string, createdAt: number): Promise<boolean> {
    const r = await this.pool.query('INSERT INTO projects (project_id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING', [
      projectId,
      name,
      createdAt,
    ]);
    return r.rowCount === 1;
  }
  async importKey(projectId: string, secret: Buffer, createdAt: number): Promise<boolean> {
    const r = await this.pool.query('INSERT INTO keys (project_id, secret, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING', [
      projectId,
      secret,
      createdAt,
    ]);
    return r.rowCount === 1;
  }
  async importToken(tokenId: string, projectId: string | null, hash: Buffer, createdAt: number): Promise<boolean> {
    const r = await this.pool.query('INSERT INTO read_tokens (token_id, project_id, hash, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING', [
      tokenId,
      projectId,
      hash,
      createdAt,
    ]);
    return r.rowCount === 1;
  }

  async projectKeys(projectId: string): Promise<ProjectKey[]> {
    const r = await this.pool.query<{ id: number; secret: Buffer; revoked_at: number | null }>({
      name: 'apm-project-keys',
      text: 'SELECT id, secret, revoked_at FROM keys WHERE project_id = $1 ORDER BY id',
      values: [projectId],
    });
    return r.rows.map((row) => ({ id: row.id, secret: row.secret, revokedAt: row.revoked_at }));
  }

  async revokedKeyIds(): Promise<number[]> {
    const r = await this.pool.query<{ id: number }>({ name: 'apm-revoked-keys', text: 'SELECT id FROM keys WHERE revoked_at IS NOT NULL ORDER BY id' });
    return r.rows.map((row) => row.id);
  }

  /**
   * A new access key for the project `project` names (its id, else its name: a rotation), or a
   * new project. Under the keys' lock: two collectors creating the same new project at once make one.
   */
  async createKey(project: string, now = Date.now()): Promise<CreatedKey> {
    const name = checkProjectName(project);
    return inTransaction(this.pool, (c) => this.createKeyIn(c, name, now), KEY_LOCK);
  }

  private async createKeyIn(c: PoolClient, name: string, now: number): Promise<CreatedKey> {
    const byId = await c.query<{ project_id: string }>('SELECT project_id FROM projects WHERE project_id = $1', [name]);
    const existing = byId.rows[0] ?? (await this.onlyProjectNamed(c, name));
    const insertKey = 'INSERT INTO keys (project_id, secret, created_at) VALUES ($1, $2, $3) ON CONFLICT (secret) DO NOTHING';
    if (existing !== undefined) {
      for (let attempt = 0; attempt < 4; attempt++) {
        const secret = randomBytes(32);
        if ((await c.query(insertKey, [existing.project_id, secret, now])).rowCount === 1) return { projectId: existing.project_id, secret, created: false };
      }
      throw new ProjectNameError(`could not add a key to project "${existing.project_id}"`);
    }
    for (let attempt = 0; attempt < 16; attempt++) {
      const projectId = newProjectId(name);
      const ins = await c.query('INSERT INTO projects (project_id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING', [projectId, name, now]);
      if (ins.rowCount === 0) continue;
      const secret = randomBytes(32);
      await c.query(insertKey, [projectId, secret, now]);
      return { projectId, secret, created: true };
    }
    throw new ProjectNameError(`could not find a free project id for "${projectSlug(name)}"`);
  }

  private async onlyProjectNamed(c: PoolClient, name: string): Promise<{ project_id: string } | undefined> {
    const r = await c.query<{ project_id: string }>('SELECT project_id FROM projects WHERE name = $1 ORDER BY created_at', [name]);
    if (r.rows.length > 1)
      throw ambiguousProjectName(
        name,
        r.rows.map((row) => row.project_id),
      );
    return r.rows[0];
  }

  /** Revoke the key with this fingerprint (as listKeys shows it); every collector sees it at its next poll. */
  async revokeKey(fingerprint: string, now = Date.now()): Promise<RevokedKey> {
    const fp = fingerprint.trim().toLowerCase();
    const match = (await this.pool.query<KeyDbRow>(LIST_KEYS)).rows.filter((r) => keyFingerprint(r.secret) === fp);
    const row = match[0];
    if (row === undefined) throw new KeyNotFoundError(fp);
    await this.pool.query('UPDATE keys SET revoked_at = $1 WHERE id = ANY($2::bigint[]) AND revoked_at IS NULL', [now, match.map((r) => r.id)]);
    return { projectId: row.project_id, fingerprint: fp, alreadyRevokedAt: row.revoked_at };
  }

  /** Every key without its secret (only a fingerprint of it). */
  async listKeys(): Promise<KeyRow[]> {
    const r = await this.pool.query<KeyDbRow>(LIST_KEYS);
    return r.rows.map((row) => ({
      projectId: row.project_id,
      name: row.name,
      createdAt: row.created_at,
      fingerprint: keyFingerprint(row.secret),
      revokedAt: row.revoked_at,
    }));
  }

  /** A new read token (returned in clear, once) for one project, or for all when projectId is null. */
  async createToken(projectId: string | null, now = Date.now()): Promise<{ tokenId: string; token: string }> {
    for (let attempt = 0; attempt < 16; attempt++) {
      const t = newToken();
      const r = await this.pool.query('INSERT INTO read_tokens (token_id, project_id, hash, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING', [
        t.tokenId,
        projectId,
        hashToken(t.token),
        now,
      ]);
      if (r.rowCount === 1) return t;
    }
    throw new TokenIdExhaustedError();
  }

  async listTokens(): Promise<ReadTokenRow[]> {
    const r = await this.pool.query<TokenDbRow>('SELECT token_id, project_id, hash, created_at, revoked_at FROM read_tokens ORDER BY created_at, token_id');
    return r.rows.map((row) => ({ tokenId: row.token_id, projectId: row.project_id, createdAt: row.created_at, revokedAt: row.revoked_at }));
  }

  /** Tokens not revoked; read on every API request, so a revocation takes effect at once. */
  async activeTokens(): Promise<ActiveToken[]> {
    const r = await this.pool.query<TokenDbRow>({
      name: 'apm-active-tokens',
      text: 'SELECT token_id, project_id, hash FROM read_tokens WHERE revoked_at IS NULL',
    });
    return r.rows.map((row) => ({ tokenId: row.token_id, projectId: row.project_id, hash: row.hash }));
  }

  /** 'revoked', 'already' (it was revoked before) or 'unknown'. */
  async revokeToken(tokenId: string, now = Date.now()): Promise<'revoked' | 'already' | 'unknown'> {
    const r = await this.pool.query('UPDATE read_tokens SET revoked_at = $1 WHERE token_id = $2 AND revoked_at IS NULL', [now, tokenId]);
    if (r.rowCount === 1) return 'revoked';
    const e = await this.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM read_tokens WHERE token_id = $1', [tokenId]);
    return (e.rows[0]?.n ?? 0) > 0 ? 'already' : 'unknown';
  }
}
