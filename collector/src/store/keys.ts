import { randomBytes } from 'node:crypto';
import type Database from 'better-sqlite3';
import { type AccessKey, isProjectId, keyFingerprint } from '@apm-sidecar/proto/upstream';
import { KeyNotFoundError, ProjectNameError } from '../errors';
import type { ProjectKey } from '../types';

/**
 * Projects and their access keys. A project (`projects`) has any number of keys (`keys`),
 * each valid until revoked; the handshake tries the project's keys, sessions remember the
 * key's id, and running collectors poll the revoked ids (a revocation may come from the CLI,
 * another process on the same database).
 */

export interface KeyRow {
  projectId: string;
  name: string;
  createdAt: number;
  /** keyFingerprint(secret): identifies the key without revealing it. */
  fingerprint: string;
  /** Epoch ms, or null while the key is valid. */
  revokedAt: number | null;
}

export type CreatedKey = AccessKey & { created: boolean };

/** Lower-case slug of a project name for its project id (a-z, 0-9, '-'); 'project' when nothing is left. */
export function projectSlug(name: string): string {
  const s = name
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+/, '')
    .slice(0, 56)
    .replace(/-+$/, '');
  return s.length > 0 ? s : 'project';
}

/** The project name or id `keys create --project` was given, trimmed; throws ProjectNameError when unusable. */
export function checkProjectName(project: string): string {
  const trimmed = project.trim();
  if (trimmed.length === 0) throw new ProjectNameError('it is empty');
  if (trimmed.length > 200) throw new ProjectNameError('it is longer than 200 characters');
  // biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting control characters is the point
  if (/[\u0000-\u001f\u007f]/.test(trimmed)) throw new ProjectNameError('it contains control characters');
  return trimmed;
}

/** A new project id for a project named `name`: slug(name)-<6 hex>; throws ProjectNameError when it would not be valid. */
export function newProjectId(name: string): string {
  const projectId = `${projectSlug(name)}-${randomBytes(3).toString('hex')}`;
  if (!isProjectId(projectId)) throw new ProjectNameError(`"${projectId}" is not a valid project id`);
  return projectId;
}

/** The error for a name several projects share (made before rotation existed): the project id must be given instead. */
export function ambiguousProjectName(name: string, projectIds: string[]): ProjectNameError {
  return new ProjectNameError(`${projectIds.length} projects are named "${name}" (${projectIds.join(', ')}); give the project id instead`);
}

function prepare(db: Database.Database) {
  return {
    projectKeys: db.prepare<[string], { id: number; secret: Buffer; revoked_at: number | null }>(
      'SELECT id, secret, revoked_at FROM keys WHERE project_id = ? ORDER BY id',
    ),
    revokedKeyIds: db.prepare<[], { id: number }>('SELECT id FROM keys WHERE revoked_at IS NOT NULL'),
    projectById: db.prepare<[string], { project_id: string; name: string }>('SELECT project_id, name FROM projects WHERE project_id = ?'),
    projectsByName: db.prepare<[string], { project_id: string; name: string }>('SELECT project_id, name FROM projects WHERE name = ? ORDER BY created_at'),
    insertProject: db.prepare('INSERT OR IGNORE INTO projects (project_id, name, created_at) VALUES (?, ?, ?)'),
    insertKey: db.prepare('INSERT OR IGNORE INTO keys (project_id, secret, created_at) VALUES (?, ?, ?)'),
    revokeKey: db.prepare('UPDATE keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL'),
    listKeys: db.prepare<[], { id: number; project_id: string; name: string; secret: Buffer; created_at: number; revoked_at: number | null }>(
      'SELECT k.id, k.project_id, p.name, k.secret, k.created_at, k.revoked_at FROM keys k JOIN projects p USING (project_id) ORDER BY k.created_at, k.id',
    ),
  };
}

export class KeyStore {
  private readonly st: ReturnType<typeof prepare>;
  private readonly keyTx: (name: string, now: number) => CreatedKey;

  constructor(db: Database.Database) {
    this.st = prepare(db);
    this.keyTx = db.transaction((name: string, now: number) => this.createKeyIn(name, now)).immediate;
  }

  projectKeys(projectId: string): ProjectKey[] {
    return this.st.projectKeys.all(projectId).map((r) => ({ id: r.id, secret: r.secret, revokedAt: r.revoked_at }));
  }

  revokedKeyIds(): number[] {
    return this.st.revokedKeyIds.all().map((r) => r.id);
  }

  /**
   * A new access key (32 random bytes) for the project `project` names: the project with that id,
   * else the one with that name — a second key for an existing project is a rotation, and both
   * keys work until one is revoked. Otherwise a new project, id = slug(name)-<6 hex>.
   */
  createKey(project: string, now = Date.now()): CreatedKey {
    return this.keyTx(checkProjectName(project), now);
  }

  private createKeyIn(name: string, now: number): CreatedKey {
    const existing = this.st.projectById.get(name) ?? this.onlyProjectNamed(name);
    if (existing !== undefined) {
      for (let attempt = 0; attempt < 4; attempt++) {
        const secret = randomBytes(32);
        if (this.st.insertKey.run(existing.project_id, secret, now).changes === 1) return { projectId: existing.project_id, secret, created: false };
      }
      throw new ProjectNameError(`could not add a key to project "${existing.project_id}"`);
    }
    for (let attempt = 0; attempt < 16; attempt++) {
      const projectId = newProjectId(name);
      if (this.st.insertProject.run(projectId, name, now).changes === 0) continue;
      const secret = randomBytes(32);
      this.st.insertKey.run(projectId, secret, now);
      return { projectId, secret, created: true };
    }
    throw new ProjectNameError(`could not find a free project id for "${projectSlug(name)}"`);
  }

  /** The project with this name; a name two projects share (made before rotation existed) is ambiguous. */
  private onlyProjectNamed(name: string): { project_id: string } | undefined {
    const rows = this.st.projectsByName.all(name);
    if (rows.length > 1)
      throw ambiguousProjectName(
        name,
        rows.map((r) => r.project_id),
      );
    return rows[0];
  }

  /**
   * Revoke the key with this fingerprint (as `listKeys` shows it). Running collectors poll
   * revokedKeyIds() and end that key's sessions; new handshakes with it are refused at once.
   */
  revokeKey(fingerprint: string, now = Date.now()): { projectId: string; fingerprint: string; alreadyRevokedAt: number | null } {
    const fp = fingerprint.trim().toLowerCase();
    const match = this.st.listKeys.all().filter((r) => keyFingerprint(r.secret) === fp);
    const row = match[0];
    if (row === undefined) throw new KeyNotFoundError(fp);
    for (const r of match) this.st.revokeKey.run(now, r.id);
    return { projectId: row.project_id, fingerprint: fp, alreadyRevokedAt: row.revoked_at };
  }

  /** Every key without its secret (only a fingerprint of it). */
  listKeys(): KeyRow[] {
    return this.st.listKeys.all().map((r) => ({
      projectId: r.project_id,
      name: r.name,
      createdAt: r.created_at,
      fingerprint: keyFingerprint(r.secret),
      revokedAt: r.revoked_at,
    }));
  }
}
