import { BadKeyError, type ClientHello, type Nacl, ServerHandshake, helloMadeWith, nodeX25519 } from '@apm-sidecar/proto/upstream';
import nacl from 'tweetnacl';
import type { ProjectKey } from './types';

/**
 * Every failed proof of an access key — unknown project, wrong key, revoked key — is refused
 * with this one code and message, so a refusal tells an outsider nothing (the log says which).
 */
export const KEY_REFUSED_MESSAGE = 'access key refused';

/** The handshake's X25519 in node:crypto: the same curve as tweetnacl's, ≈ 10× less CPU per handshake. */
export const handshakeNacl: Nacl = { ...nacl, ...nodeX25519 };

/** Stands in for the key of an unknown project, so that refusal does the same work as a wrong key. */
const NO_SUCH_KEY: ProjectKey = { id: -1, secret: Buffer.from(nacl.randomBytes(32)), revokedAt: null };

/**
 * Find which of the project's valid keys made the ClientHello (a project may have several
 * during a rotation). Unknown project, no matching key and a revoked key all end in the same
 * BadKeyError, after the same kind of work; only its message (for the log) says which.
 */
export function proveKey(hello: ClientHello, keys: ProjectKey[]): { handshake: ServerHandshake; keyId: number } {
  // Check the hello against every key of the project (a stand-in when there is none) before
  // deciding, so a revoked, a wrong and an unknown key cost the same.
  const made = (keys.length > 0 ? keys : [NO_SUCH_KEY]).filter((k) => helloMadeWith(hello, k.secret));
  const valid = made.find((k) => k.revokedAt === null && k !== NO_SUCH_KEY);
  if (valid !== undefined) return { handshake: new ServerHandshake(handshakeNacl, hello, valid.secret), keyId: valid.id };
  if (keys.length === 0) throw new BadKeyError(`unknown project "${hello.projectId}"`);
  const revoked = made[0];
  if (revoked?.revokedAt != null) throw new BadKeyError(`a key of project "${hello.projectId}" revoked at ${new Date(revoked.revokedAt).toISOString()}`);
  throw new BadKeyError(`no access key of project "${hello.projectId}" matches`);
}
