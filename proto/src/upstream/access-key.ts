import { createHash } from 'node:crypto';
import { AccessKeyFormatError } from './errors';

/**
 * An access key names a project and carries its 32-byte secret:
 *
 *   apmk.<project id>.<secret, 43 chars base64url>
 *
 * The project id is public (it selects the key on the collector); the secret
 * never crosses the wire: the handshake proves possession with MACs.
 */
export interface AccessKey {
  projectId: string;
  secret: Buffer;
}

export const SECRET_BYTES = 32;
const PROJECT_RE = /^[a-z0-9][a-z0-9-]{0,62}$/;

export function isProjectId(s: string): boolean {
  return PROJECT_RE.test(s);
}

export function formatAccessKey(k: AccessKey): string {
  return `apmk.${k.projectId}.${k.secret.toString('base64url')}`;
}

export function parseAccessKey(text: string): AccessKey {
  const s = text.trim();
  const parts = s.split('.');
  if (parts.length !== 3 || parts[0] !== 'apmk') throw new AccessKeyFormatError('expected apmk.<project>.<secret>');
  const projectId = parts[1] as string;
  if (!isProjectId(projectId)) throw new AccessKeyFormatError('bad project id');
  const enc = parts[2] as string;
  if (!/^[A-Za-z0-9_-]{43}$/.test(enc)) throw new AccessKeyFormatError('secret must be 43 base64url characters');
  const secret = Buffer.from(enc, 'base64url');
  // One spelling per key: 43 characters carry 258 bits, the last two must be zero.
  if (secret.length !== SECRET_BYTES || secret.toString('base64url') !== enc)
    throw new AccessKeyFormatError('secret is not the canonical base64url of 32 bytes');
  return { projectId, secret };
}

/** A short, non-reversible fingerprint for logs and `keys list` (never the secret). */
export function keyFingerprint(secret: Buffer): string {
  return createHash('sha256').update('apm-sidecar/fingerprint').update(secret).digest('hex').slice(0, 12);
}
