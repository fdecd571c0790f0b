import { type KeyObject, createPrivateKey, createPublicKey, diffieHellman, generateKeyPairSync } from 'node:crypto';
import { HandshakeError } from './errors';
import type { Ephemeral, Nacl } from './handshake';

/** OpenSSL's code for a derivation that failed (a small-order peer key): node:crypto's, not one of ours. */
const OSSL_DERIVATION_FAILED = `ERR_OSSL_${'FAILED_DURING_DERIVATION'}`;

/**
 * The handshake's key exchange (`box.keyPair`, `scalarMult`) through node:crypto: the same
 * X25519 (RFC 7748) as tweetnacl's, byte for byte, at about a tenth of the CPU (tweetnacl
 * computes the curve in JavaScript: ≈ 2 ms per side, most of a handshake).
 *
 *   const nacl = { ...tweetnacl, ...nodeX25519 };   // secretbox and randomBytes stay tweetnacl's
 *
 * - A pair it makes keeps its private KeyObject until that pair's one `scalarMult` (an
 *   ephemeral key agrees once), so the secret is not imported back into OpenSSL: importing a raw
 *   X25519 private key goes through the PKCS#8 decoder, ≈ 0.8 ms, more than the whole exchange.
 *   That `scalarMult` therefore computes with the key as made, whatever the array holds by then
 *   (the handshake wipes it only afterwards).
 *   The 32 secret bytes handed out are real (tweetnacl's `scalarMult` gives the same result
 *   with them) and are never turned into a string, so the caller's `fill(0)` wipes them.
 * - Any other secret key (one the caller made) is imported, through a DER Buffer that is wiped.
 * - A small-order peer key makes OpenSSL refuse the derivation; this returns 32 zero bytes,
 *   tweetnacl's result, which the handshake refuses as a degenerate Diffie-Hellman result.
 */
const PKCS8_X25519 = Buffer.from('302e020100300506032b656e04220420', 'hex');
const KEY_BYTES = 32;

/** Private KeyObjects of the pairs made here, by the secret-key array handed out with each. */
const issued = new WeakMap<Uint8Array, KeyObject>();

function publicKeyObject(p: Uint8Array): KeyObject {
  if (p.length !== KEY_BYTES) throw new HandshakeError(`an X25519 public key has ${KEY_BYTES} bytes, not ${p.length}`);
  // A public key is not secret: the JWK form (a base64url string) is the cheapest import.
  return createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: Buffer.from(p.buffer, p.byteOffset, p.byteLength).toString('base64url') }, format: 'jwk' });
}

function privateKeyObject(n: Uint8Array): KeyObject {
  if (n.length !== KEY_BYTES) throw new HandshakeError(`an X25519 secret key has ${KEY_BYTES} bytes, not ${n.length}`);
  const der = Buffer.alloc(PKCS8_X25519.length + KEY_BYTES);
  PKCS8_X25519.copy(der, 0);
  der.set(n, PKCS8_X25519.length);
  try {
    return createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
  } finally {
    der.fill(0);
  }
}

function keyPair(): { publicKey: Uint8Array; secretKey: Uint8Array } {
  const { publicKey, privateKey } = generateKeyPairSync('x25519');
  const der = privateKey.export({ type: 'pkcs8', format: 'der' });
  const secretKey = new Uint8Array(der.subarray(PKCS8_X25519.length));
  der.fill(0);
  issued.set(secretKey, privateKey);
  const x = publicKey.export({ format: 'jwk' }).x;
  if (x === undefined) throw new HandshakeError('node:crypto exported an X25519 public key without x');
  return { publicKey: new Uint8Array(Buffer.from(x, 'base64url')), secretKey };
}

function scalarMult(n: Uint8Array, p: Uint8Array): Uint8Array {
  const own = issued.get(n);
  issued.delete(n);
  return agreeWith(own ?? privateKeyObject(n), p);
}

/** A key that never leaves OpenSSL: nothing to export (≈ 47 µs for the PKCS#8 form) and nothing to wipe. */
function ephemeral(): Ephemeral {
  let { publicKey, privateKey }: { publicKey: KeyObject; privateKey: KeyObject | null } = generateKeyPairSync('x25519');
  const x = publicKey.export({ format: 'jwk' }).x;
  if (x === undefined) throw new HandshakeError('node:crypto exported an X25519 public key without x');
  return {
    publicKey: new Uint8Array(Buffer.from(x, 'base64url')),
    agree(peer: Uint8Array): Uint8Array {
      const key = privateKey;
      privateKey = null;
      if (key === null) throw new HandshakeError('an ephemeral key agrees once');
      return agreeWith(key, peer);
    },
  };
}

function agreeWith(privateKey: KeyObject, p: Uint8Array): Uint8Array {
  try {
    return new Uint8Array(diffieHellman({ privateKey, publicKey: publicKeyObject(p) }));
  } catch (err) {
    // OpenSSL fails exactly when the shared secret is all zeros (a small-order point).
    if ((err as NodeJS.ErrnoException).code === OSSL_DERIVATION_FAILED) return new Uint8Array(KEY_BYTES);
    throw err;
  }
}

export const nodeX25519: Pick<Nacl, 'box' | 'scalarMult' | 'ephemeral'> = { box: { keyPair }, scalarMult, ephemeral };
