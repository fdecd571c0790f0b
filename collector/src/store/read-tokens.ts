import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type Database from 'better-sqlite3';
import { TokenIdExhaustedError } from '../errors';

/**
 * Read tokens for the collector's HTTP API (DESIGN §10).
 *
 *   apmr.<token id: 8 hex>.<secret: 32 random bytes, base64url>
 *
 * The token is printed once, at creation; the database keeps only its SHA-256 (domain-separated),
 * so a copy of the database does not give API access. A token is either collector-wide
 * (project_id NULL) or scoped to one project. Revoked tokens stay listed with their revocation time.
 */

export interface ReadTokenRow {
  tokenId: string;
  /** null: every project. */
  projectId: string | null;
  createdAt: number;
  revokedAt: number | null;
}

/** What the API checks a presented token against. */
export interface ActiveToken {
  tokenId: string;
  projectId: string | null;
  hash: Buffer;
}

const PREFIX = 'apmr';

export function hashToken(token: string): Buffer {
  return createHash('sha256').update('apm-collector/read-token\0').update(token, 'utf8').digest();
}

/**
 * The token among `active` whose hash matches `presented`, or undefined. Every stored hash is
 * compared with timingSafeEqual, with no early exit, so the time taken does not depend on which
 * (if any) matched or on how many leading bytes agree.
 */
export function matchToken(presented: string, active: readonly ActiveToken[]): ActiveToken | undefined {
  const h = hashToken(presented);
  let found: ActiveToken | undefined;
  for (const t of active) {
    if (t.hash.length === h.length && timingSafeEqual(t.hash, h) && found === undefined) found = t;
  }
  return found;
}

/** A new token and its id (the caller stores hashToken(token) under the id, retrying when the id is taken). */
export function newToken(): { tokenId: string; token: string } {
  const tokenId = randomBytes(4).toString('hex');
  return { tokenId, token: `${PREFIX}.${tokenId}.${randomBytes(32).toString('base64url')}` };
}

interface DbRow {
  token_id: string;
  project_id: string | null;
  hash: Buffer;
  created_at: number;
  revoked_at: number | null;
}

/** The read_tokens table. */
export class ReadTokens {
  private readonly st;

  constructor(db: Database.Database) {
    this.st = {
      insert: db.prepare('INSERT OR IGNORE INTO read_tokens (token_id, project_id, hash, created_at) VALUES (?, ?, ?, ?)'),
      list: db.prepare<[], DbRow>('SELECT token_id, project_id, hash, created_at, revoked_at FROM read_tokens ORDER BY created_at, token_id'),
      active: db.prepare<[], DbRow>('SELECT token_id, project_id, hash, created_at, revoked_at FROM read_tokens WHERE revoked_at IS NULL'),
      revoke: db.prepare('UPDATE read_tokens SET revoked_at = ? WHERE token_id = ? AND revoked_at IS NULL'),
      exists: db.prepare<[string], { n: number }>('SELECT count(*) AS n FROM read_tokens WHERE token_id = ?'),
    };
  }

  /** A new token (returned in clear, once) for one project, or for all when projectId is null. */
  create(projectId: string | null, now = Date.now()): { tokenId: string; token: string } {
    for (let attempt = 0; attempt < 16; attempt++) {
      const { tokenId, token } = newToken();
      if (this.st.insert.run(tokenId, projectId, hashToken(token), now).changes === 1) return { tokenId, token };
    }
    throw new TokenIdExhaustedError();
  }

  list(): ReadTokenRow[] {
    return this.st.list.all().map((r) => ({ tokenId: r.token_id, projectId: r.project_id, createdAt: r.created_at, revokedAt: r.revoked_at }));
  }

  /** Tokens not revoked; read on every API request, so a revocation takes effect at once. */
  active(): ActiveToken[] {
    return this.st.active.all().map((r) => ({ tokenId: r.token_id, projectId: r.project_id, hash: r.hash }));
  }

  /** 'revoked', 'already' (it was revoked before) or 'unknown'. */
  revoke(tokenId: string, now = Date.now()): 'revoked' | 'already' | 'unknown' {
    if (this.st.revoke.run(now, tokenId).changes === 1) return 'revoked';
    return (this.st.exists.get(tokenId)?.n ?? 0) > 0 ? 'already' : 'unknown';
  }
}
