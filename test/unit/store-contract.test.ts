import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { keyFingerprint } from '@apm-sidecar/proto/upstream';
import { matchToken } from '@apm-sidecar/collector';
import type { CollectorInfo, CollectorStore } from '@apm-sidecar/collector/dist/store/contract';
import { type StoreFactory, type StoreOpts, storeFactories } from '../helpers/store-factories';

/**
 * The store contract (collector/src/store/contract.ts, DESIGN §7, §11): one set of cases, run
 * against every store. Two instances on one location stand for two collectors sharing it.
 */

const T0 = Date.UTC(2026, 0, 1, 12, 0, 0);

const ag = (agentId: string, projectId = 'p') => ({ projectId, agentId });
const info = (agentId: string, apps: string[] = ['shop']) => ({ agentId, host: `${agentId}.local`, version: '1.0.0', apps });
const collector = (id: string): CollectorInfo => ({ id, host: 'h', pid: 1, agentsAddress: `${id}:6600`, httpAddress: `${id}:6680` });
const cause = (at: number, reason = 'test') => ({ at, reason });

/** `it` for one store: skipped (saying why) where that store cannot run here. */
function storeIt(
  f: StoreFactory,
  name: string,
  fn: (env: { fresh: () => Promise<string>; open: (loc: string, o?: StoreOpts) => Promise<CollectorStore> }) => Promise<void>,
) {
  it(name, async (t) => {
    const why = f.skip();
    if (why !== undefined) return t.skip(why);
    await fn({ fresh: () => f.fresh(), open: (loc, o) => f.open(loc, o) });
  });
}

for (const f of storeFactories()) {
  describe(`store contract (${f.name}): keys and tokens`, () => {
    storeIt(f, 'creates projects and keys, rotates, lists and revokes them', async ({ fresh, open }) => {
      const s = await open(await fresh());
      const k1 = await s.createKey('Shop Front', T0);
      assert.equal(k1.created, true);
      assert.match(k1.projectId, /^shop-front-[0-9a-f]{6}$/);
      assert.equal(k1.secret.length, 32);
      // The same name, or the project id: a second key of the same project (rotation).
      const k2 = await s.createKey('  Shop Front ', T0 + 1);
      const k3 = await s.createKey(k1.projectId, T0 + 2);
      assert.deepEqual([k2.created, k2.projectId, k3.created, k3.projectId], [false, k1.projectId, false, k1.projectId]);
      const keys = await s.projectKeys(k1.projectId);
      assert.deepEqual(
        keys.map((k) => [k.secret.toString('hex'), k.revokedAt]),
        [k1, k2, k3].map((k) => [k.secret.toString('hex'), null]),
      );
      assert.deepEqual(await s.projectKeys('no-such-project'), []);
      const listed = await s.listKeys();
      assert.deepEqual(
        listed.map((r) => [r.projectId, r.name, r.createdAt, r.fingerprint, r.revokedAt]),
        [k1, k2, k3].map((k, i) => [k1.projectId, 'Shop Front', T0 + i, keyFingerprint(k.secret), null]),
      );
      assert.ok(!JSON.stringify(listed).includes(k1.secret.toString('hex')), 'listKeys never shows a secret');

      const r1 = await s.revokeKey(keyFingerprint(k2.secret).toUpperCase(), T0 + 10);
      assert.deepEqual(r1, { projectId: k1.projectId, fingerprint: keyFingerprint(k2.secret), alreadyRevokedAt: null });
      const r2 = await s.revokeKey(keyFingerprint(k2.secret), T0 + 20);
      assert.equal(r2.alreadyRevokedAt, T0 + 10);
      const revokedId = (await s.projectKeys(k1.projectId)).find((k) => k.revokedAt !== null)?.id;
      assert.deepEqual(await s.revokedKeyIds(), [revokedId]);
      await assert.rejects(s.revokeKey('00'.repeat(8)), { code: 'ERR_KEY_NOT_FOUND' });
      await assert.rejects(s.createKey('   '), { code: 'ERR_PROJECT_NAME' });
      await assert.rejects(s.createKey('a\nb'), { code: 'ERR_PROJECT_NAME' });
    });

    storeIt(f, 'creates, matches and revokes read tokens', async ({ fresh, open }) => {
      const s = await open(await fresh());
      const all = await s.createToken(null, T0);
      const one = await s.createToken('p-1', T0 + 1);
      assert.match(all.token, new RegExp(`^apmr\\.${all.tokenId}\\.[A-Za-z0-9_-]{43}$`));
      assert.deepEqual(await s.listTokens(), [
        { tokenId: all.tokenId, projectId: null, createdAt: T0, revokedAt: null },
        { tokenId: one.tokenId, projectId: 'p-1', createdAt: T0 + 1, revokedAt: null },
      ]);
      const active = await s.activeTokens();
      assert.equal(matchToken(one.token, active)?.projectId, 'p-1');
      assert.equal(matchToken(all.token, active)?.tokenId, all.tokenId);
      assert.equal(matchToken(`${one.token}x`, active), undefined);
      assert.equal(await s.revokeToken(one.tokenId, T0 + 5), 'revoked');
      assert.equal(await s.revokeToken(one.tokenId, T0 + 6), 'already');
      assert.equal(await s.revokeToken('ffffffff'), 'unknown');
      assert.equal(matchToken(one.token, await s.activeTokens()), undefined);
      assert.equal((await s.listTokens())[1]?.revokedAt, T0 + 5);
    });

    storeIt(f, 'a revocation made through one instance is seen by another on the same store', async ({ fresh, open }) => {
      const loc = await fresh();
      const a = await open(loc);
      const b = await open(loc);
      const k = await a.createKey('shared', T0);
      const tok = await a.createToken(null, T0);
      // B sees A's key and token, revokes both; A sees the revocations.
      assert.equal((await b.projectKeys(k.projectId)).length, 1);
      assert.ok(matchToken(tok.token, await b.activeTokens()));
      assert.deepEqual(await a.revokedKeyIds(), []);
      await b.revokeKey(keyFingerprint(k.secret), T0 + 1);
      assert.equal(await b.revokeToken(tok.tokenId, T0 + 1), 'revoked');
      assert.deepEqual(await a.revokedKeyIds(), [(await a.projectKeys(k.projectId))[0]?.id]);
      assert.equal(matchToken(tok.token, await a.activeTokens()), undefined);
      // A project created through B is the one A rotates.
      const k2 = await b.createKey('other', T0 + 2);
      assert.equal((await a.createKey('other', T0 + 3)).projectId, k2.projectId);
    });
  });

  describe(`store contract (${f.name}): agents and the collectors holding their sessions`, () => {
    storeIt(f, 'an agent connected to B stays live when its old session ends late on A', async ({ fresh, open }) => {
      const loc = await fresh();
      const a = await open(loc);
      const b = await open(loc);
      await a.heartbeat(collector('A'), T0);
      await b.heartbeat(collector('B'), T0);
      assert.deepEqual(await a.agentConnected('p', info('x'), T0, 'A'), { from: 'disconnected', to: 'live' });
      // The sidecar fails over to B while A has not yet noticed its session is gone.
      assert.equal(await b.agentConnected('p', info('x'), T0 + 10, 'B'), null, 'already live: no change of state');
      assert.equal(await a.setAgentState(ag('x'), 'stalled', cause(T0 + 20), 'A'), null);
      assert.equal(await a.setAgentState(ag('x'), 'disconnected', cause(T0 + 30), 'A'), null);
      const [row] = await a.listAgents();
      assert.deepEqual([row?.state, row?.stateSince], ['live', T0]);
      assert.deepEqual(
        (await a.listCollectors()).map((c) => [c.id, c.agents]),
        [
          ['A', 0],
          ['B', 1],
        ],
      );
      // B, which holds the session, changes it; 'disconnected' ends its hold.
      assert.deepEqual(await b.setAgentState(ag('x'), 'stalled', cause(T0 + 40), 'B'), { from: 'live', to: 'stalled' });
      assert.deepEqual(await b.setAgentState(ag('x'), 'disconnected', cause(T0 + 50), 'B'), { from: 'stalled', to: 'disconnected' });
      assert.equal(await b.setAgentState(ag('x'), 'live', cause(T0 + 60), 'B'), null, 'B no longer holds it');
      assert.deepEqual(
        (await a.listCollectors()).map((c) => c.agents),
        [0, 0],
      );
      const [after] = await b.listAgents();
      assert.deepEqual([after?.state, after?.stateSince], ['disconnected', T0 + 50]);
      // Without a collector id the change applies whoever holds the session (one collector alone).
      assert.deepEqual(await a.setAgentState(ag('x'), 'live', cause(T0 + 70)), { from: 'disconnected', to: 'live' });
      assert.equal(await a.setAgentState(ag('nobody'), 'live', cause(T0 + 70)), null, 'unknown agent');
    });

    storeIt(f, 'keeps agent info, identity per project, last-seen times and counts by state', async ({ fresh, open }) => {
      const s = await open(await fresh(), { seenPersistMs: 1000 });
      await s.agentConnected('p', info('x', ['shop', 'cart']), T0, 'A');
      await s.agentConnected('q', info('x', ['other']), T0 + 1, 'A');
      // No app named: the agent keeps the apps it had.
      await s.agentInfo('p', { agentId: 'x', host: 'x2.local', version: '1.1.0', apps: [] }, T0 + 2);
      await s.agentSeen(ag('x'), T0 + 3);
      const rows = await s.listAgents();
      assert.deepEqual(
        rows.map((r) => [r.projectId, r.agentId, r.app, r.apps, r.host, r.version, r.state, r.firstSeenAt, r.lastSeenAt, r.licensed]),
        [
          ['p', 'x', 'shop', ['shop', 'cart'], 'x2.local', '1.1.0', 'live', T0, T0 + 3, false],
          ['q', 'x', 'other', ['other'], 'x.local', '1.0.0', 'live', T0 + 1, T0 + 1, false],
        ],
      );
      assert.deepEqual(
        (await s.listAgents({ project: 'q' })).map((r) => r.projectId),
        ['q'],
      );
      await s.setAgentState(ag('x', 'q'), 'disconnected', cause(T0 + 5), 'A');
      assert.deepEqual(await s.agentsByState(), { live: 1, stalled: 0, disconnected: 1 });
    });

    storeIt(f, 'agentSeen is throttled, shows the newest time at once, and writes it on close', async ({ fresh, open }) => {
      const loc = await fresh();
      const a = await open(loc, { seenPersistMs: 60_000 });
      const b = await open(loc);
      await a.agentConnected('p', info('x'), T0, 'A');
      await a.agentSeen(ag('x'), T0 + 1000);
      assert.equal((await a.listAgents())[0]?.lastSeenAt, T0 + 1000, 'the writer sees the newest time');
      assert.equal((await b.listAgents())[0]?.lastSeenAt, T0, 'not written yet');
      await a.close();
      assert.equal((await b.listAgents())[0]?.lastSeenAt, T0 + 1000, 'written on close');
    });
  });

  describe(`store contract (${f.name}): collectors sharing the store`, () => {
    storeIt(f, 'registers collectors; reaps one silent for longer than deadAfterMs and disconnects its agents', async ({ fresh, open }) => {
      const loc = await fresh();
      const a = await open(loc);
      const b = await open(loc);
      await a.heartbeat(collector('A'), T0);
      await b.heartbeat(collector('B'), T0 + 5);
      await a.agentConnected('p', info('a1'), T0, 'A');
      await a.agentConnected('p', info('a2'), T0, 'A');
      await b.agentConnected('p', info('b1'), T0, 'B');
      const rows = await b.listCollectors();
      assert.deepEqual(
        rows.map((c) => [c.id, c.agentsAddress, c.httpAddress, c.startedAt, c.heartbeatAt, c.agents]),
        [
          ['A', 'A:6600', 'A:6680', T0, T0, 2],
          ['B', 'B:6600', 'B:6680', T0 + 5, T0 + 5, 1],
        ],
      );
      // A heartbeat refreshes; it never goes back in time.
      await b.heartbeat(collector('B'), T0 + 1000);
      await b.heartbeat(collector('B'), T0 + 900);
      assert.equal((await a.listCollectors()).find((c) => c.id === 'B')?.heartbeatAt, T0 + 1000);
      // Silent for exactly deadAfterMs: not yet dead.
      assert.deepEqual(await b.reapCollectors(T0 + 1000, 1000), { collectors: [], agents: [] });
      const reaped = await b.reapCollectors(T0 + 1001, 1000);
      assert.deepEqual(reaped.collectors, ['A']);
      assert.deepEqual(reaped.agents.map((x) => x.agentId).sort(), ['a1', 'a2']);
      assert.deepEqual(
        (await b.listCollectors()).map((c) => c.id),
        ['B'],
      );
      const states = Object.fromEntries((await b.listAgents()).map((r) => [r.agentId, [r.state, r.stateSince]]));
      assert.deepEqual(states, { a1: ['disconnected', T0 + 1001], a2: ['disconnected', T0 + 1001], b1: ['live', T0] });
      // A's late end of its sessions changes nothing now; a reap finds nothing more.
      assert.equal(await a.setAgentState(ag('a1'), 'disconnected', cause(T0 + 2000), 'A'), null);
      assert.deepEqual(await a.reapCollectors(T0 + 1002, 1000), { collectors: [], agents: [] });
    });

    storeIt(f, 'a starting collector disconnects the agents no live collector holds, and leaves the others', async ({ fresh, open }) => {
      const loc = await fresh();
      const a = await open(loc);
      const b = await open(loc);
      await b.heartbeat(collector('B'), T0);
      await a.heartbeat(collector('OLD'), T0 - 60_000);
      await b.agentConnected('p', info('on-b'), T0, 'B');
      await a.agentConnected('p', info('on-old'), T0 - 60_000, 'OLD');
      await a.agentConnected('p', info('on-gone'), T0 - 60_000, 'GONE'); // a collector that never registered
      const c = await open(loc);
      assert.equal(await c.resetSessions(collector('C'), T0 + 10, 30_000), 2);
      const states = Object.fromEntries((await c.listAgents()).map((r) => [r.agentId, [r.state, r.stateSince]]));
      assert.deepEqual(states, { 'on-b': ['live', T0], 'on-old': ['disconnected', T0 + 10], 'on-gone': ['disconnected', T0 + 10] });
      assert.equal(await c.resetSessions(collector('C'), T0 + 20, 30_000), 0, 'nothing left to reset');
    });

    storeIt(f, 'a collector leaving removes itself and disconnects its agents', async ({ fresh, open }) => {
      const loc = await fresh();
      const a = await open(loc);
      const b = await open(loc);
      await a.heartbeat(collector('A'), T0);
      await b.heartbeat(collector('B'), T0);
      await a.agentConnected('p', info('x'), T0, 'A');
      await b.agentConnected('p', info('y'), T0, 'B');
      await a.leave(collector('A'), T0 + 5);
      assert.deepEqual(
        (await b.listCollectors()).map((c) => c.id),
        ['B'],
      );
      assert.deepEqual(
        (await b.listAgents()).map((r) => [r.agentId, r.state]),
        [
          ['x', 'disconnected'],
          ['y', 'live'],
        ],
      );
    });
  });

  describe(`store contract (${f.name}): the license pool`, () => {
    storeIt(f, 'is set once for the store and shared: three agents, two licenses, two collectors', async ({ fresh, open }) => {
      const loc = await fresh();
      const a = await open(loc);
      const b = await open(loc);
      assert.equal(await a.licenseCapacity(), 0, 'unlimited until set');
      assert.equal(await a.setLicenseCapacity(2), null);
      assert.equal(await b.licenseCapacity(), 2);
      assert.equal(await b.setLicenseCapacity(2), 2);
      const release = 300_000;
      for (const [s, id] of [
        [a, 'x'],
        [b, 'y'],
        [a, 'z'],
      ] as const)
        await s.agentConnected('p', info(id), T0, s === a ? 'A' : 'B');
      assert.deepEqual(await a.acquireLicense(ag('x'), T0, release), { granted: true, reason: 'license 1 of 2' });
      assert.deepEqual(await b.acquireLicense(ag('y'), T0, release), { granted: true, reason: 'license 2 of 2' });
      assert.deepEqual(await a.acquireLicense(ag('z'), T0, release), { granted: false, reason: 'all 2 licenses are in use' });
      assert.deepEqual(await b.acquireLicense(ag('x'), T0 + 1, release), { granted: true, reason: 'license kept' });
      // x disconnects: its license is kept for `release`, then freed for whoever asks.
      await a.setAgentState(ag('x'), 'disconnected', cause(T0 + 100), 'A');
      assert.equal((await b.acquireLicense(ag('z'), T0 + 100 + release - 1, release)).granted, false);
      assert.deepEqual(await b.releaseLicenses(T0 + 100 + release - 1, release), []);
      assert.deepEqual(await b.acquireLicense(ag('z'), T0 + 100 + release, release), { granted: true, reason: 'license 2 of 2' });
      const licensed = (await a.listAgents()).filter((r) => r.licensed).map((r) => r.agentId);
      assert.deepEqual(licensed, ['y', 'z']);
      // releaseLicenses frees the due ones and names them.
      await b.setAgentState(ag('y'), 'disconnected', cause(T0 + 1000), 'B');
      assert.deepEqual(await a.releaseLicenses(T0 + 1000 + release, release), [ag('y')]);
      await a.agentLicensed(ag('z'), false);
      assert.deepEqual(
        (await b.listAgents()).filter((r) => r.licensed),
        [],
      );
    });

    storeIt(f, 'concurrent acquires from two instances never exceed the capacity', async ({ fresh, open }) => {
      const loc = await fresh();
      const a = await open(loc);
      const b = await open(loc);
      await a.setLicenseCapacity(5);
      const ids = Array.from({ length: 24 }, (_, i) => `agent-${String(i).padStart(2, '0')}`);
      for (const id of ids) await a.agentConnected('p', info(id), T0, 'A');
      const grants = await Promise.all(ids.map((id, i) => (i % 2 === 0 ? a : b).acquireLicense(ag(id), T0, 300_000)));
      assert.equal(grants.filter((g) => g.granted).length, 5);
      assert.equal((await b.listAgents()).filter((r) => r.licensed).length, 5);
      // Unlimited (0): everyone.
      await b.setLicenseCapacity(0);
      const again = await Promise.all(ids.map((id, i) => (i % 2 === 0 ? b : a).acquireLicense(ag(id), T0, 300_000)));
      assert.equal(again.filter((g) => g.granted).length, ids.length);
    });
  });
}
