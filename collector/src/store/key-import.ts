import type Database from 'better-sqlite3';

/**
 * Writing projects, access keys and read tokens as they are, with their own ids, secrets and
 * hashes (copy-keys.ts moves them from one store to another): `createKey` and `createToken`
 * always make new ones. Each call is one statement; an existing row (same project id, same
 * secret, same token id) is left as it is, so a copy can run again.
 */
export class SqliteKeyImport {
  private readonly st;

  constructor(db: Database.Database) {
    this.st = {
      project: db.prepare('INSERT OR IGNORE INTO projects (project_id, name, created_at) VALUES (?, ?, ?)'),
      key: db.prepare('INSERT OR IGNORE INTO keys (project_id, secret, created_at) VALUES (?, ?, ?)'),
      token: db.prepare('INSERT OR IGNORE INTO read_tokens (token_id, project_id, hash, created_at) VALUES (?, ?, ?, ?)'),
    };
  }

  /** True when the project was added (false: one with this id exists). */
  importProject(projectId: string, name: string, createdAt: number): boolean {
    return this.st.project.run(projectId, name, createdAt).changes === 1;
  }

  /** A valid key of an existing project. True when added (false: this secret is stored already). */
  importKey(projectId: string, secret: Buffer, createdAt: number): boolean {
    return this.st.key.run(projectId, secret, createdAt).changes === 1;
  }

  /** An active read token, by its hash (the token itself is never stored). True when added. */
  importToken(tokenId: string, projectId: string | null, hash: Buffer, createdAt: number): boolean {
    return this.st.token.run(tokenId, projectId, hash, createdAt).changes === 1;
  }
}
