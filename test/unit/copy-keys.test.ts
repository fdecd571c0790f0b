import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { keyFingerprint } from '@apm-sidecar/proto/upstream';
import { SqliteCollectorStore, matchToken } from '@apm-sidecar/collector';
import { type KeyTarget, copyKeys } from '@apm-sidecar/collector/dist/store/copy-keys';
import { SqliteKeyImport } from '@apm-sidecar/collector/dist/store/key-import';
import { tempDirsRemovedAfter } from '../helpers/temp-dirs';

const tempDir = tempDirsRemovedAfter('apm-copy-keys-');

/** The import methods on the target's database file (SqliteKeyImport), the rest through the contract. */
function target(store: SqliteCollectorStore, db: Database.Database): KeyTarget {
  const imp = new SqliteKeyImport(db);
  return {
    location: store.location,
    revokeKey: (fp, now) => store.revokeKey(fp, now),
    importProject: async (...a) => imp.importProject(...a),
    importKey: async (...a) => imp.importKey(...a),
    importToken: async (...a) => imp.importToken(...a),
  };
}

describe('copyKeys: an SQLite collector’s projects, keys and read tokens into another store', () => {
  it('copies projects, the same key secrets (revoked ones stay revoked) and active tokens by hash; again adds nothing', async () => {
    const from = SqliteCollectorStore.open(tempDir());
    const to = SqliteCollectorStore.open(tempDir());
    const db = new Database(to.location);
    try {
      const shop = await from.createKey('shop', 1_000);
      const shop2 = await from.createKey(shop.projectId, 2_000);
      const billing = await from.createKey('billing', 3_000);
      await from.revokeKey(keyFingerprint(shop2.secret), 4_000);
      const all = await from.createToken(null, 5_000);
      const scoped = await from.createToken(shop.projectId, 6_000);
      const gone = await from.createToken(null, 7_000);
      await from.revokeToken(gone.tokenId, 8_000);
      // The target already has a project of its own: it stays.
      const own = await to.createKey('own', 500);

      const r = await copyKeys(from, target(to, db));
      assert.deepEqual(r, { projects: 2, keys: 3, tokens: 2, revokedKeys: 1, skippedRevokedTokens: 1 });

      const sorted = <T extends { fingerprint: string }>(xs: T[]) => [...xs].sort((a, b) => a.fingerprint.localeCompare(b.fingerprint));
      const toKeys = (await to.listKeys()).filter((k) => k.projectId !== own.projectId);
      assert.deepEqual(sorted(toKeys), sorted(await from.listKeys()));
      for (const p of [shop.projectId, billing.projectId]) {
        const secrets = (ks: { secret: Buffer; revokedAt: number | null }[]) => ks.map((k) => `${k.secret.toString('hex')}/${k.revokedAt}`).sort();
        assert.deepEqual(secrets(await to.projectKeys(p)), secrets(await from.projectKeys(p)));
      }
      assert.equal((await to.projectKeys(own.projectId)).length, 1);

      const active = await to.activeTokens();
      assert.equal(matchToken(all.token, active)?.projectId, null);
      assert.equal(matchToken(scoped.token, active)?.projectId, shop.projectId);
      assert.equal(matchToken(gone.token, active), undefined);
      assert.deepEqual(
        (await to.listTokens()).map((t) => [t.tokenId, t.projectId, t.createdAt, t.revokedAt]),
        [
          [all.tokenId, null, 5_000, null],
          [scoped.tokenId, shop.projectId, 6_000, null],
        ],
      );

      const again = await copyKeys(from, target(to, db));
      assert.deepEqual(again, { projects: 0, keys: 0, tokens: 0, revokedKeys: 0, skippedRevokedTokens: 1 });
      assert.equal((await to.listKeys()).length, 4);
    } finally {
      db.close();
      await from.close();
      await to.close();
    }
  });

  it('revokes in the target a key revoked in the source after an earlier copy', async () => {
    const from = SqliteCollectorStore.open(tempDir());
    const to = SqliteCollectorStore.open(tempDir());
    const db = new Database(to.location);
    try {
      const k = await from.createKey('shop', 1_000);
      assert.deepEqual(await copyKeys(from, target(to, db)), { projects: 1, keys: 1, tokens: 0, revokedKeys: 0, skippedRevokedTokens: 0 });
      await from.revokeKey(keyFingerprint(k.secret), 9_000);
      assert.deepEqual(await copyKeys(from, target(to, db)), { projects: 0, keys: 0, tokens: 0, revokedKeys: 1, skippedRevokedTokens: 0 });
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
