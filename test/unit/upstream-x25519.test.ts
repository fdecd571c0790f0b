// The handshake's X25519 through node:crypto (proto/src/upstream/x25519.ts), which the sidecar
// and the collector use in place of tweetnacl's JavaScript curve: the same function byte for
// byte (so agents and collectors built before it still agree on every key), small-order keys
// still refused, the ephemeral secret still wiped, and both products wired to it.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import {
  type AccessKey,
  ClientHandshake,
  type Ephemeral,
  HandshakeError,
  type Nacl,
  ServerHandshake,
  UpstreamType,
  nodeX25519,
  readClientHello,
} from '@apm-sidecar/proto/upstream';
import { handshakeNacl } from '@apm-sidecar/collector';
import { naclImpl } from '@apm-sidecar/sidecar';
import nacl from 'tweetnacl';
import { throwsCode } from '../helpers/throws-code';

const fast: Nacl = { ...nacl, ...nodeX25519 };

function payloadOf(frame: Buffer, type: number): Buffer {
  assert.equal(frame[4], type);
  return frame.subarray(5);
}

/** One in-memory handshake with the agent on `client` and the collector on `server`; both sides' keys. */
function exchange(key: AccessKey, client: Nacl, server: Nacl) {
  const c = new ClientHandshake(client, key, 'agent-1');
  const s = new ServerHandshake(server, readClientHello(payloadOf(c.hello(), UpstreamType.ClientHello)), key.secret);
  const { finished, keys } = c.serverHello(payloadOf(s.serverHello(), UpstreamType.ServerHello));
  return { clientKeys: keys, serverKeys: s.clientFinished(payloadOf(finished, UpstreamType.ClientFinished)) };
}

/** Points of small order (and non-canonical encodings of them): X25519 with any scalar gives all zeros. */
const LOW_ORDER_POINTS: [string, Buffer][] = [
  ['0', Buffer.alloc(32)],
  ['1', Buffer.concat([Buffer.of(1), Buffer.alloc(31)])],
  ['order 8 (a)', Buffer.from('e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800', 'hex')],
  ['order 8 (b)', Buffer.from('5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157', 'hex')],
  ['p - 1', Buffer.from('ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f', 'hex')],
  ['p', Buffer.from('edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f', 'hex')],
  ['0 with the high bit set', Buffer.concat([Buffer.alloc(31), Buffer.of(0x80)])],
];

describe('X25519 through node:crypto is tweetnacl’s X25519', () => {
  it('a pair it makes: the public key is tweetnacl’s scalarMult.base of the secret, and the shared secret is tweetnacl’s', () => {
    for (let i = 0; i < 100; i++) {
      const a = nodeX25519.box.keyPair();
      const b = nacl.box.keyPair();
      assert.equal(a.publicKey.length, 32);
      assert.equal(a.secretKey.length, 32);
      assert.deepEqual(Buffer.from(nacl.scalarMult.base(a.secretKey)), Buffer.from(a.publicKey));
      const expected = Buffer.from(nacl.scalarMult(a.secretKey, b.publicKey));
      assert.deepEqual(Buffer.from(nodeX25519.scalarMult(a.secretKey, b.publicKey)), expected);
      assert.deepEqual(Buffer.from(nacl.scalarMult(b.secretKey, a.publicKey)), expected, 'both sides agree');
    }
  });

  it('any 32-byte secret and any 32-byte peer value (high bit set, not on the curve) give tweetnacl’s result', () => {
    for (let i = 0; i < 200; i++) {
      const n = new Uint8Array(randomBytes(32));
      const p = new Uint8Array(randomBytes(32));
      if (i % 2 === 0) p[31] = (p[31] as number) | 0x80;
      assert.deepEqual(Buffer.from(nodeX25519.scalarMult(n, p)), Buffer.from(nacl.scalarMult(n, p)), `case ${i}`);
    }
  });

  it('a pair’s secret used a second time (a copy, after its one agreement) still gives tweetnacl’s result', () => {
    const a = nodeX25519.box.keyPair();
    const copy = Uint8Array.from(a.secretKey);
    const b = nacl.box.keyPair();
    const first = Buffer.from(nodeX25519.scalarMult(a.secretKey, b.publicKey));
    assert.deepEqual(Buffer.from(nodeX25519.scalarMult(copy, b.publicKey)), first);
    assert.deepEqual(Buffer.from(nodeX25519.scalarMult(a.secretKey, b.publicKey)), first, 'the array handed out, again');
  });

  it('small-order peer keys give 32 zero bytes, as tweetnacl', () => {
    const a = nodeX25519.box.keyPair();
    for (const [name, point] of LOW_ORDER_POINTS) {
      assert.deepEqual(Buffer.from(nacl.scalarMult(Uint8Array.from(a.secretKey), point)), Buffer.alloc(32), `tweetnacl, ${name}`);
      assert.deepEqual(Buffer.from(nodeX25519.scalarMult(Uint8Array.from(a.secretKey), point)), Buffer.alloc(32), name);
    }
  });

  it('an ephemeral key (the secret kept inside OpenSSL) agrees as tweetnacl does, once, and small-order peers give zeros', () => {
    const ephemeral = nodeX25519.ephemeral;
    assert.ok(ephemeral !== undefined);
    const mk = (): Ephemeral => ephemeral();
    for (let i = 0; i < 20; i++) {
      const e = mk();
      const peer = nacl.box.keyPair();
      const mine = e.agree(peer.publicKey);
      assert.deepEqual(Buffer.from(mine), Buffer.from(nacl.scalarMult(peer.secretKey, e.publicKey)));
      throwsCode(() => e.agree(peer.publicKey), HandshakeError, 'ERR_HANDSHAKE', 'a second agreement');
    }
    for (const [name, point] of LOW_ORDER_POINTS)
      assert.ok(
        mk()
          .agree(point)
          .every((x) => x === 0),
        name,
      );
    throwsCode(() => mk().agree(new Uint8Array(31)), HandshakeError, 'ERR_HANDSHAKE', 'a short peer key');
  });

  it('keys of the wrong size are refused with ERR_HANDSHAKE', () => {
    const a = nodeX25519.box.keyPair();
    assert.throws(() => nodeX25519.scalarMult(a.secretKey, new Uint8Array(31)), { code: 'ERR_HANDSHAKE' });
    assert.throws(() => nodeX25519.scalarMult(new Uint8Array(33), a.publicKey), { code: 'ERR_HANDSHAKE' });
  });
});

describe('the handshake with X25519 in node:crypto', () => {
  const key: AccessKey = { projectId: 'shop', secret: randomBytes(32) };

  it('agrees with agents and collectors that compute X25519 in tweetnacl, either way round (the wire is unchanged)', () => {
    for (const [client, server] of [
      [fast, nacl],
      [nacl, fast],
      [fast, fast],
    ] as const) {
      const s = exchange(key, client, server);
      assert.deepEqual(s.clientKeys, s.serverKeys);
    }
  });

  it('a small-order ephemeral key is ERR_HANDSHAKE on both sides', () => {
    for (const [name, point] of LOW_ORDER_POINTS) {
      const client = new ClientHandshake(fast, key, 'agent-1');
      const genuine = payloadOf(client.hello(), UpstreamType.ClientHello);
      // ServerHandshake takes A from the parsed hello; the tag, over the raw bytes, still matches.
      const hello = readClientHello(genuine);
      const swapped = { ...hello, ephemeral: point };
      throwsCode(() => new ServerHandshake(fast, swapped, key.secret), HandshakeError, 'ERR_HANDSHAKE', `collector, ${name}`);
      const sh = Buffer.concat([point, randomBytes(32), randomBytes(32)]);
      const err = throwsCode(() => client.serverHello(sh), HandshakeError, 'ERR_HANDSHAKE', `agent, ${name}`);
      assert.match(err.message, /degenerate/);
    }
  });

  it('both sides wipe the ephemeral secret they were handed once the DH secret is computed', () => {
    const handed: Uint8Array[] = [];
    // Without ephemeral(), the handshake uses box.keyPair and must wipe the secret it was handed.
    const { ephemeral: _unused, ...withoutEphemeral } = fast;
    const watching: Nacl = {
      ...withoutEphemeral,
      box: {
        keyPair() {
          const kp = nodeX25519.box.keyPair();
          handed.push(kp.secretKey);
          return kp;
        },
      },
    };
    const s = exchange(key, watching, watching);
    assert.deepEqual(s.clientKeys, s.serverKeys);
    assert.equal(handed.length, 2);
    for (const k of handed) assert.ok(k.every((x) => x === 0));
  });
});

describe('the sidecar and the collector compute the handshake’s X25519 in node:crypto', () => {
  it('the sidecar’s nacl (agent side) and the collector’s (ServerHandshake) use nodeX25519 for the key exchange and tweetnacl for secretbox', () => {
    for (const [who, impl] of [
      ['sidecar', naclImpl],
      ['collector', handshakeNacl],
    ] as const) {
      assert.equal(impl.box.keyPair, nodeX25519.box.keyPair, who);
      assert.equal(impl.scalarMult, nodeX25519.scalarMult, who);
      assert.equal(impl.ephemeral, nodeX25519.ephemeral, who);
      assert.equal(impl.secretbox, nacl.secretbox, who);
    }
  });
});
