import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import {
  type AccessRequest,
  MIGRATIONS,
  SqliteStore,
  bearerToken,
  decideAccess,
  hashToken,
  isLoopbackBind,
  isLoopbackHost,
  isLoopbackPeer,
  matchToken,
} from '@apm-sidecar/collector';

describe('api access: loopback names and addresses', () => {
  it('takes localhost, 127.x.y.z and [::1], with or without a port, as loopback Host names', () => {
    for (const h of ['localhost', 'LocalHost:6680', '127.0.0.1', '127.0.0.1:1', '127.255.255.254:65535', '[::1]', '[::1]:6680']) {
      assert.equal(isLoopbackHost(h), true, h);
    }
  });

  it('refuses every other Host: other names, rebinding look-alikes, bad ports, a missing header', () => {
    for (const h of [
      undefined,
      '',
      'evil.example.com',
      'evil.example.com:6680',
      'localhost.evil.example.com',
      'evil-localhost',
      '127.0.0.1.nip.io',
      '127.0.0.256',
      '127.1',
      '0.0.0.0',
      '[::]',
      '[::1',
      '::1',
      'localhost:',
      'localhost:abc',
      'localhost:6680:1',
      '[::1]x',
      '192.168.1.10',
    ]) {
      assert.equal(isLoopbackHost(h), false, String(h));
    }
  });

  it('knows loopback peers (IPv4, IPv6, IPv4-mapped) and loopback bind addresses', () => {
    for (const a of ['127.0.0.1', '127.9.9.9', '::1', '::ffff:127.0.0.1']) assert.equal(isLoopbackPeer(a), true, a);
    for (const a of [undefined, '10.0.0.1', '::ffff:10.0.0.1', 'fe80::1', '::']) assert.equal(isLoopbackPeer(a), false, String(a));
    for (const h of ['127.0.0.1', 'localhost', '::1']) assert.equal(isLoopbackBind(h), true, h);
    for (const h of ['0.0.0.0', '::', '192.0.2.1', 'collector.internal']) assert.equal(isLoopbackBind(h), false, h);
  });

  it('reads the token of a Bearer header only', () => {
    assert.equal(bearerToken('Bearer abc'), 'abc');
    assert.equal(bearerToken('bearer  abc '), 'abc');
    for (const h of [undefined, '', 'Bearer', 'Bearer ', 'Basic abc', 'abc', 'Bearer a b', `Bearer ${'x'.repeat(600)}`])
      assert.equal(bearerToken(h), undefined, String(h));
  });
});

describe('api access: decisions', () => {
  const shop = { tokenId: 'aaaaaaaa', projectId: 'shop-000001', hash: hashToken('t-shop') };
  const all = { tokenId: 'bbbbbbbb', projectId: null, hash: hashToken('t-all') };
  const local = { peer: '127.0.0.1', host: 'localhost:6680', authorization: undefined };
  const remote = { peer: '10.0.0.7', host: 'collector.example.com', authorization: undefined };
  const decide = (r: Omit<AccessRequest, 'route'>, route: AccessRequest['route'], tokens = [shop, all], metricsOpen = false) =>
    decideAccess({ ...r, route }, { tokens, metricsOpen });

  it('protected mode (no token): loopback peer and Host pass; anything else is 403 ERR_PROTECTED_MODE; /healthz is open', () => {
    assert.deepEqual(decide(local, 'api', []), { ok: true, project: null });
    assert.deepEqual(decide(local, 'page', []), { ok: true, project: null });
    for (const r of [remote, { ...local, host: 'evil.example.com' }, { ...local, peer: '10.0.0.7' }]) {
      for (const route of ['api', 'page', 'metrics'] as const) {
        const d = decide(r, route, []);
        assert.equal(d.ok, false);
        assert.deepEqual(d.ok ? null : [d.status, d.code, d.reason], [403, 'ERR_PROTECTED_MODE', 'protectedMode']);
      }
      assert.equal(decide(r, 'open', []).ok, true);
    }
  });

  it('tokens configured: the API needs a valid Bearer token, even from loopback; the page and /healthz do not', () => {
    for (const authorization of [undefined, 'Bearer t-wrong', 'Basic t-all', 't-all']) {
      const d = decide({ ...local, authorization }, 'api');
      assert.deepEqual(d.ok ? null : [d.status, d.code, d.reason], [401, 'ERR_UNAUTHORIZED', 'unauthorized'], String(authorization));
    }
    assert.deepEqual(decide({ ...remote, authorization: 'Bearer t-all' }, 'api'), { ok: true, project: null, tokenId: 'bbbbbbbb' });
    assert.deepEqual(decide({ ...remote, authorization: 'Bearer t-shop' }, 'api'), { ok: true, project: 'shop-000001', tokenId: 'aaaaaaaa' });
    assert.equal(decide(remote, 'page').ok, true);
    assert.equal(decide(remote, 'open').ok, true);
  });

  it('/metrics: loopback, or a collector-wide token; a project token is 403 ERR_TOKEN_SCOPE; --metrics-open opens it', () => {
    assert.equal(decide(local, 'metrics').ok, true);
    const none = decide(remote, 'metrics');
    assert.equal(none.ok ? 0 : none.status, 401);
    assert.equal(decide({ ...remote, authorization: 'Bearer t-all' }, 'metrics').ok, true);
    const scoped = decide({ ...remote, authorization: 'Bearer t-shop' }, 'metrics');
    assert.deepEqual(scoped.ok ? null : [scoped.status, scoped.code, scoped.reason], [403, 'ERR_TOKEN_SCOPE', 'forbidden']);
    assert.equal(decide(remote, 'metrics', [shop], true).ok, true);
    assert.equal(decide(remote, 'metrics', [], true).ok, true);
  });

  it('matchToken compares the hash with every stored one and finds the right token', () => {
    assert.equal(matchToken('t-shop', [all, shop])?.tokenId, 'aaaaaaaa');
    assert.equal(matchToken('t-all', [all, shop])?.tokenId, 'bbbbbbbb');
    assert.equal(matchToken('t-nope', [all, shop]), undefined);
    assert.equal(matchToken('t-all', [{ ...all, hash: Buffer.alloc(3) }]), undefined, 'a stored hash of another length never matches');
  });
});

describe('read tokens in the store', () => {
  it('creates, lists and revokes tokens; only the hash is stored; a schema-3 database gains the table', () => {
    const dir = mkdtempSync(join(tmpdir(), 'apm-tok-'));
    try {
      const db = new Database(join(dir, 'collector.db'));
      for (const m of MIGRATIONS.slice(0, 3)) db.exec(m);
      db.pragma('user_version = 3');
      db.close();
      const store = SqliteStore.open(dir);
      try {
        assert.deepEqual(store.tokens.active(), []);
        const a = store.tokens.create(null, 1000);
        const b = store.tokens.create('shop-000001', 2000);
        assert.match(a.token, /^apmr\.[0-9a-f]{8}\.[A-Za-z0-9_-]{43}$/);
        assert.equal(a.token.split('.')[1], a.tokenId);
        assert.deepEqual(store.tokens.list(), [
          { tokenId: a.tokenId, projectId: null, createdAt: 1000, revokedAt: null },
          { tokenId: b.tokenId, projectId: 'shop-000001', createdAt: 2000, revokedAt: null },
        ]);
        assert.ok(
          store.tokens
            .active()
            .find((t) => t.tokenId === b.tokenId)
            ?.hash.equals(hashToken(b.token)),
        );
        assert.equal(store.tokens.revoke(a.tokenId, 3000), 'revoked');
        assert.equal(store.tokens.revoke(a.tokenId, 4000), 'already');
        assert.equal(store.tokens.revoke('00000000'), 'unknown');
        assert.deepEqual(
          store.tokens.active().map((t) => t.tokenId),
          [b.tokenId],
        );
        assert.equal(store.tokens.list()[0]?.revokedAt, 3000);
      } finally {
        store.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
