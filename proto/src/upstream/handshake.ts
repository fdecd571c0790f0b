import { createHmac, timingSafeEqual } from 'node:crypto';
import { Reader, Writer } from '../buffer';
import { MalformedMessageError } from '../errors';
import type { AccessKey } from './access-key';
import { BadKeyError, HandshakeError, ServerProofError } from './errors';
import { UpstreamType } from './types';

/**
 * The upstream handshake: mutual proof of the access key, ephemeral X25519
 * from both sides, two session keys.
 *
 *   agent                                                     collector
 *   (a, A) = box.keyPair(); Na = 32 random bytes
 *   ClientHello { v, project, agentId, A, Na, helloTag } ───────▶  find psk by project;
 *       helloTag = HMAC(psk, "hello" ‖ fields)                    check helloTag (else ERR_BAD_KEY)
 *                                                                 (b, B) = box.keyPair(); Nb random
 *                                                                 dh = X25519(b, A)
 *   ◀────────────────────────────── ServerHello { B, Nb, serverTag }
 *   dh = X25519(a, B)
 *   th = HMAC-SHA512("…transcript", ClientHello ‖ B ‖ Nb)   (transcript hash, both sides)
 *   keys    = HMAC-SHA512(psk, "keys"    ‖ dh ‖ th)  → textKey ‖ numericKey
 *   confirm = HMAC-SHA512(psk, "confirm" ‖ dh ‖ th)  → serverConfirm ‖ clientConfirm
 *   check serverTag = HMAC(serverConfirm, th)  (else ERR_SERVER_PROOF)
 *   ClientFinished { clientTag = HMAC(clientConfirm, th) } ─────▶  check (else ERR_BAD_KEY)
 *
 *   (tags are HMAC-SHA256; key material is HMAC-SHA512 split in two 32-byte halves)
 *
 * Why each property holds:
 * - Mutual proof: only a holder of psk computes serverTag / clientTag; both
 *   also bind dh, so a tag cannot be lifted from another session.
 * - Fresh randomness from both sides: A, Na and B, Nb are new per session and
 *   all enter th, so keys are new per session even if one side's RNG repeats.
 * - A replayed ClientHello yields nothing: the collector answers with a fresh
 *   B, Nb; without `a` the replayer cannot compute dh, so cannot send a valid
 *   ClientFinished nor read or forge any sealed frame.
 * - Forward secrecy: a and b are discarded after the handshake; a leaked psk
 *   plus a recording of a past session lacks dh, so it decrypts nothing.
 * - helloTag lets the collector reject a wrong key before doing any DH work
 *   and count it as badKey; it proves nothing on its own (it can be replayed).
 */
export const UPSTREAM_VERSION = 1;
const KEY_BYTES = 32;

/** The subset of tweetnacl the handshake uses (injected: proto has no dependencies). */
export interface Nacl {
  box: { keyPair(): { publicKey: Uint8Array; secretKey: Uint8Array } };
  scalarMult(n: Uint8Array, p: Uint8Array): Uint8Array;
  /**
   * An ephemeral key that agrees once, its secret kept where it was made (node:crypto's
   * OpenSSL key): used instead of box.keyPair + scalarMult when given. Same X25519.
   */
  ephemeral?(): Ephemeral;
  randomBytes(n: number): Uint8Array;
  secretbox: {
    (msg: Uint8Array, nonce: Uint8Array, key: Uint8Array): Uint8Array;
    open(box: Uint8Array, nonce: Uint8Array, key: Uint8Array): Uint8Array | null;
  };
}

export interface Ephemeral {
  publicKey: Uint8Array;
  /** X25519 with the peer's public key; the secret is dropped after this one call. */
  agree(peer: Uint8Array): Uint8Array;
}

/** nacl.ephemeral(), or the same from box.keyPair + scalarMult (the secret's bytes wiped after). */
function ephemeralOf(nacl: Nacl): Ephemeral {
  if (nacl.ephemeral !== undefined) return nacl.ephemeral();
  const kp = nacl.box.keyPair();
  return {
    publicKey: kp.publicKey,
    agree(peer: Uint8Array): Uint8Array {
      try {
        return nacl.scalarMult(kp.secretKey, peer);
      } finally {
        kp.secretKey.fill(0);
      }
    },
  };
}

export interface SessionKeys {
  /** tweetnacl secretbox (XSalsa20-Poly1305): control, text, traces, events, snapshots, registrations. */
  textKey: Buffer;
  /** ChaCha20-Poly1305 (node:crypto): metric packs. */
  numericKey: Buffer;
}

export interface ClientHello {
  v: number;
  projectId: string;
  agentId: string;
  ephemeral: Buffer;
  nonce: Buffer;
  tag: Buffer;
  /** The payload bytes as received (enter the transcript). */
  raw: Buffer;
}

function hmac256(key: Buffer, ...parts: Uint8Array[]): Buffer {
  const h = createHmac('sha256', key);
  for (const p of parts) h.update(p);
  return h.digest();
}

function hmac512(key: Buffer, ...parts: Uint8Array[]): Buffer {
  const h = createHmac('sha512', key);
  for (const p of parts) h.update(p);
  return h.digest();
}

function equal(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

const LABEL_HELLO = Buffer.from('apm-sidecar/1 hello');
const LABEL_KEYS = Buffer.from('apm-sidecar/1 keys');
const LABEL_CONFIRM = Buffer.from('apm-sidecar/1 confirm');
const LABEL_TRANSCRIPT = Buffer.from('apm-sidecar/1 transcript');

function helloFields(w: Writer, v: number, projectId: string, agentId: string, eph: Uint8Array, nonce: Uint8Array): void {
  w.u8(v).str(projectId).str(agentId).bytes(eph).bytes(nonce);
}

function derive(psk: Buffer, dh: Uint8Array, th: Buffer): { keys: SessionKeys; serverConfirm: Buffer; clientConfirm: Buffer } {
  if (dh.every((b) => b === 0)) throw new HandshakeError('degenerate Diffie-Hellman result');
  const k = hmac512(psk, LABEL_KEYS, dh, th);
  const c = hmac512(psk, LABEL_CONFIRM, dh, th);
  return {
    keys: { textKey: k.subarray(0, KEY_BYTES), numericKey: k.subarray(KEY_BYTES, 2 * KEY_BYTES) },
    serverConfirm: c.subarray(0, KEY_BYTES),
    clientConfirm: c.subarray(KEY_BYTES, 2 * KEY_BYTES),
  };
}

function transcript(clientHelloRaw: Buffer, serverEph: Uint8Array, serverNonce: Uint8Array): Buffer {
  return hmac512(LABEL_TRANSCRIPT, clientHelloRaw, serverEph, serverNonce);
}

/** Agent side. */
export class ClientHandshake {
  private readonly eph: Ephemeral;
  private readonly helloRaw: Buffer;
  private done = false;

  constructor(
    nacl: Nacl,
    private readonly key: AccessKey,
    agentId: string,
  ) {
    this.eph = ephemeralOf(nacl);
    const nonce = nacl.randomBytes(32);
    const body = new Writer(256);
    helloFields(body, UPSTREAM_VERSION, key.projectId, agentId, this.eph.publicKey, nonce);
    const fields = body.body();
    const tag = hmac256(key.secret, LABEL_HELLO, fields);
    const w = new Writer(256);
    w.bytes(fields).bytes(tag);
    this.helloRaw = w.body();
  }

  /** The ClientHello frame. */
  hello(): Buffer {
    const w = new Writer(this.helloRaw.length + 8);
    w.bytes(this.helloRaw);
    return w.frame(UpstreamType.ClientHello);
  }

  /** Verify the collector's proof; returns the ClientFinished frame and the session keys. */
  serverHello(payload: Buffer): { finished: Buffer; keys: SessionKeys } {
    if (this.done) throw new HandshakeError('ServerHello received twice');
    this.done = true;
    const r = new Reader(payload);
    let eph: Buffer;
    let nonce: Buffer;
    let tag: Buffer;
    try {
      eph = Buffer.from(r.view(32));
      nonce = Buffer.from(r.view(32));
      tag = Buffer.from(r.view(32));
      r.expectEnd('ServerHello');
    } catch (err) {
      throw new HandshakeError(`malformed ServerHello: ${(err as Error).message}`);
    }
    const th = transcript(this.helloRaw, eph, nonce);
    const dh = this.eph.agree(eph);
    const d = derive(this.key.secret, dh, th);
    if (!equal(tag, hmac256(d.serverConfirm, th))) throw new ServerProofError();
    const w = new Writer(64);
    w.bytes(hmac256(d.clientConfirm, th));
    return { finished: w.frame(UpstreamType.ClientFinished), keys: d.keys };
  }
}

/** Parse a ClientHello (collector side), before the project's key is known. */
export function readClientHello(payload: Buffer): ClientHello {
  const r = new Reader(payload);
  try {
    const v = r.u8();
    const projectId = r.str();
    const agentId = r.str();
    if (projectId.length === 0 || projectId.length > 64) throw new MalformedMessageError('project id length');
    if (agentId.length === 0 || agentId.length > 256) throw new MalformedMessageError('agent id length');
    const ephemeral = Buffer.from(r.view(32));
    const nonce = Buffer.from(r.view(32));
    const tag = Buffer.from(r.view(32));
    r.expectEnd('ClientHello');
    return { v, projectId, agentId, ephemeral, nonce, tag, raw: Buffer.from(payload) };
  } catch (err) {
    if (err instanceof MalformedMessageError) throw new HandshakeError(`malformed ClientHello: ${err.message}`);
    throw err;
  }
}

/**
 * Whether the ClientHello's tag was made with `secret` (collector side: a project may have
 * several keys while one is rotated; this finds the one the agent used). Only a MAC check.
 */
export function helloMadeWith(hello: ClientHello, secret: Buffer): boolean {
  const fields = hello.raw.subarray(0, hello.raw.length - 32);
  return equal(hello.tag, hmac256(secret, LABEL_HELLO, fields));
}

/** Collector side: construct once the ClientHello's project key is found. */
export class ServerHandshake {
  private readonly th: Buffer;
  private readonly derived: ReturnType<typeof derive>;
  private readonly eph: Uint8Array;
  private readonly nonce: Uint8Array;
  private finished = false;

  /** Throws BadKeyError when the hello was not made with `secret`. */
  constructor(nacl: Nacl, hello: ClientHello, secret: Buffer) {
    if (hello.v !== UPSTREAM_VERSION) throw new HandshakeError(`upstream version ${hello.v} is not supported (this collector speaks ${UPSTREAM_VERSION})`);
    const fields = hello.raw.subarray(0, hello.raw.length - 32);
    if (!equal(hello.tag, hmac256(secret, LABEL_HELLO, fields))) throw new BadKeyError(`access key for project "${hello.projectId}" does not match`);
    const own = ephemeralOf(nacl);
    this.eph = own.publicKey;
    this.nonce = nacl.randomBytes(32);
    this.th = transcript(hello.raw, this.eph, this.nonce);
    const dh = own.agree(hello.ephemeral);
    this.derived = derive(secret, dh, this.th);
  }

  serverHello(): Buffer {
    const w = new Writer(128);
    w.bytes(this.eph).bytes(this.nonce).bytes(hmac256(this.derived.serverConfirm, this.th));
    return w.frame(UpstreamType.ServerHello);
  }

  /** Check the agent's proof; returns the session keys. */
  clientFinished(payload: Buffer): SessionKeys {
    if (this.finished) throw new HandshakeError('ClientFinished received twice');
    this.finished = true;
    if (payload.length !== 32 || !equal(payload, hmac256(this.derived.clientConfirm, this.th))) {
      throw new BadKeyError('the agent could not prove it holds the access key');
    }
    return this.derived.keys;
  }
}
