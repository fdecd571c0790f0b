import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { keyFingerprint } from '@apm-sidecar/proto/upstream';
import { type ActiveToken, type ReadTokenRow, SqliteStore, matchToken } from '@apm-sidecar/collector';
import { type KeySource, type KeyTarget, copyKeys } from '@apm-sidecar/collector/dist/store/copy-keys';
import { SqliteKeyImport } from '@apm-sidecar/collector/dist/store/key-import';
import { tempDirsRemovedAfter } from '../helpers/temp-dirs';

const tempDir = tempDirsRemovedAfter('apm-copy-keys-');

interface TokenMethods {
  listTokens(): ReadTokenRow[] | Promise<ReadTokenRow[]>;
  activeTokens(): ActiveToken[] | Promise<ActiveToken[]>;
  createToken(projectId: string | null, now?: number): { tokenId: string; token: string } | Promise<{ tokenId: string; token: string }>;
  revokeToken(tokenId: string, now?: number): unknown;
}

/**
 * The store's read-token methods: the contract's (listTokens, …) where the store has them, else
 * those of its `tokens` part (the SQLite store before it implements the whole contract).
 */
function tokensOf(store: SqliteStore): TokenMethods {
  const s = store as unknown as Partial<TokenMethods> & {
    tokens?: {
      list(): ReadTokenRow[];
      active(): ActiveToken[];
      create(p: string | null, now?: number): { tokenId: string; token: string };
      revoke(id: string, now?: number): unknown;
    };
  };
  const { listTokens, activeTokens, createToken, revokeToken } = s;
  if (listTokens !== undefined && activeTokens !== undefined && createToken !== undefined && revokeToken !== undefined)
    return {
      listTokens: () => listTokens.call(store),
      activeTokens: () => activeTokens.call(store),
      createToken: (p, n) => createToken.call(store, p, n),
      revokeToken: (id, n) => revokeToken.call(store, id, n),
    };
  const t = s.tokens;
  assert.ok(t !== undefined, 'the store has no read-token methods');
  return { listTokens: () => t.list(), activeTokens: () => t.active(), createToken: (p, n) => t.create(p, n), revokeToken: (id, n) => t.revoke(id, n) };
}

function source(store: SqliteStore): KeySource {
  const t = tokensOf(store);
  return {
    location: store.path,
    listKeys: async () => store.listKeys(),
    projectKeys: async (id) => store.projectKeys(id),
    listTokens: async () => t.listTokens(),
    activeTokens: async () => t.activeTokens(),
  };
}

function target(store: SqliteStore, db: Database.Database): KeyTarget {
  const imp = new SqliteKeyImport(db);
  return {
    location: store.path,
    revokeKey: async (fp, now) => store.revokeKey(fp, now),
    importProject: async (...a) => imp.importProject(...a),
    importKey: async (...a) => imp.importKey(...a),
    importToken: async (...a) => imp.importToken(...a),
  };
}

describe('copyKeys: an SQLite collector’s projects, keys and read tokens into another store', () => {
  it('copies projects, the same key secrets (revoked ones stay revoked) and active tokens by hash; again adds nothing', async () => {
    const from = await SqliteStore.open(tempDir());
    const to = await SqliteStore.open(tempDir());
    const db = new Database(to.path);
    try {
      const shop = await from.createKey('shop', 1_000);
      const shop2 = await from.createKey(shop.projectId, 2_000);
      const billing = await from.createKey('billing', 3_000);
      await from.revokeKey(keyFingerprint(shop2.secret), 4_000);
      const ft = tokensOf(from);
      const all = await ft.createToken(null, 5_000);
      const scoped = await ft.createToken(shop.projectId, 6_000);
      const gone = await ft.createToken(null, 7_000);
      await ft.revokeToken(gone.tokenId, 8_000);
      // The target already has a project of its own: it stays.
      const own = await to.createKey('own', 500);

      const r = await copyKeys(source(from), target(to, db));
      assert.deepEqual(r, { projects: 2, keys: 3, tokens: 2, revokedKeys: 1, skippedRevokedTokens: 1 });

      const sorted = <T extends { fingerprint: string }>(xs: T[]) => [...xs].sort((a, b) => a.fingerprint.localeCompare(b.fingerprint));
      const toKeys = (await to.listKeys()).filter((k) => k.projectId !== own.projectId);
      assert.deepEqual(sorted(toKeys), sorted(await from.listKeys()));
      for (const p of [shop.projectId, billing.projectId]) {
        const secrets = (ks: { secret: Buffer; revokedAt: number | null }[]) => ks.map((k) => `${k.secret.toString('hex')}/${k.revokedAt}`).sort();
        assert.deepEqual(secrets(await to.projectKeys(p)), secrets(await from.projectKeys(p)));
      }
      assert.equal((await to.projectKeys(own.projectId)).length, 1);

      const tt = tokensOf(to);
      const active = await tt.activeTokens();
      assert.equal(matchToken(all.token, active)?.projectId, null);
      assert.equal(matchToken(scoped.token, active)?.projectId, shop.projectId);
      assert.equal(matchToken(gone.token, active), undefined);
      assert.deepEqual(
        (await tt.listTokens()).map((t) => [t.tokenId, t.projectId, t.createdAt, t.revokedAt]),
        [
          [all.tokenId, null, 5_000, null],
          [scoped.tokenId, shop.projectId, 6_000, null],
        ],
      );

      const again = await copyKeys(source(from), target(to, db));
      assert.deepEqual(again, { projects: 0, keys: 0, tokens: 0, revokedKeys: 0, skippedRevokedTokens: 1 });
      assert.equal((await to.listKeys()).length, 4);
    } finally {
      db.close();
      await from.close();
      await to.close();
    }
  });

  it('revokes in the target a key revoked in the source after an earlier copy', async () => {
    const from = await SqliteStore.open(tempDir());
    const to = await SqliteStore.open(tempDir());
    const db = new Database(to.path);
    try {
      const k = await from.createKey('shop', 1_000);
      assert.deepEqual(await copyKeys(source(from), target(to, db)), { projects: 1, keys: 1, tokens: 0, revokedKeys: 0, skippedRevokedTokens: 0 });
      await from.revokeKey(keyFingerprint(k.secret), 9_000);
      assert.deepEqual(await copyKeys(source(from), target(to, db)), { projects: 0, keys: 0, tokens: 0, revokedKeys: 1, skippedRevokedTokens: 0 });
      assert.deepEqual(
        (await to.projectKeys(k.projectId)).map((x) => x.revokedAt),
        [9_000],
      );
    } finally {
      db.close();
      await from.close();
      await to.close();
    }
  });
});
