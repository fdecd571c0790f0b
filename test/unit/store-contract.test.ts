import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MetricKind, type MetricPoint, type Series, Sketch, encodeSeries } from '@apm-sidecar/proto';
import { type TextItem, type UpMetricPack, decodeMetricBatch, encodeMetricBatch, keyFingerprint } from '@apm-sidecar/proto/upstream';
import { type CollectorInfo, type CollectorStore, matchToken } from '@apm-sidecar/collector';
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

function counter(name: string, tags: Record<string, string> = {}): Series {
  return { key: encodeSeries(MetricKind.Counter, name, tags).toString('latin1'), kind: MetricKind.Counter, name, tags };
}
const REQ = counter('http.requests', { route: '/pay' });
const ERR = counter('http.errors');

function sumPoint(s: Series, values: number[]): MetricPoint {
  return {
    series: s,
    count: values.length,
    sum: values.reduce((a, b) => a + b, 0),
    min: Math.min(...values),
    max: Math.max(...values),
    last: Number.NaN,
    sketch: null,
  };
}

/** Packs as the agent server hands them over: through the real upstream codec. */
function packs(...ps: [packId: string, start: number, points: MetricPoint[]][]): UpMetricPack[] {
  return decodeMetricBatch(encodeMetricBatch(ps.map(([packId, intervalStart, points]) => ({ packId, intervalStart, intervalMs: 10_000, points }))));
}

const ORIGIN = { app: 'shop', instanceId: 'i-1', pid: 7 };

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

    storeIt(f, 'connectAgent: the row, its state and its license in one transaction, as agentConnected then acquireLicense', async ({ fresh, open }) => {
      const loc = await fresh();
      const a = await open(loc);
      const b = await open(loc);
      await a.setLicenseCapacity(1);
      const release = 300_000;
      assert.deepEqual(await a.connectAgent('p', info('x'), T0, 'A', release), {
        change: { from: 'disconnected', to: 'live' },
        license: { granted: true, reason: 'license 1 of 1' },
      });
      assert.deepEqual(await b.connectAgent('p', info('y'), T0 + 1, 'B', release), {
        change: { from: 'disconnected', to: 'live' },
        license: { granted: false, reason: 'all 1 licenses are in use' },
      });
      // x again on B (a failover): already live, its license kept, its session now B's.
      assert.deepEqual(await b.connectAgent('p', info('x'), T0 + 2, 'B', release), { change: null, license: { granted: true, reason: 'license kept' } });
      const rows = await a.listAgents();
      assert.deepEqual(
        rows.map((r) => [r.agentId, r.state, r.licensed]),
        [
          ['x', 'live', true],
          ['y', 'live', false],
        ],
      );
      // The session is B's: A's late 'disconnected' for x no longer applies, B's does.
      assert.equal(await a.setAgentState(ag('x'), 'disconnected', cause(T0 + 3), 'A'), null);
      assert.deepEqual(await b.setAgentState(ag('x'), 'disconnected', cause(T0 + 3), 'B'), { from: 'live', to: 'disconnected' });
      // Once x's license is due, y's next connect takes it.
      assert.deepEqual((await a.connectAgent('p', info('y'), T0 + 3 + release, 'A', release)).license, { granted: true, reason: 'license 1 of 1' });
    });

    storeIt(f, 'concurrent connects from two instances never exceed the capacity', async ({ fresh, open }) => {
      const loc = await fresh();
      const a = await open(loc);
      const b = await open(loc);
      await a.setLicenseCapacity(3);
      const ids = Array.from({ length: 12 }, (_, i) => `agent-${String(i).padStart(2, '0')}`);
      const got = await Promise.all(ids.map((id, i) => (i % 2 === 0 ? a : b).connectAgent('p', info(id), T0, i % 2 === 0 ? 'A' : 'B', 300_000)));
      assert.equal(got.filter((g) => g.license.granted).length, 3);
      assert.equal((await b.listAgents()).filter((r) => r.licensed).length, 3);
      assert.equal((await b.listAgents()).filter((r) => r.state === 'live').length, ids.length);
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

  describe(`store contract (${f.name}): data`, () => {
    storeIt(f, 'a pack stored through two instances counts once, one after the other and at the same time', async ({ fresh, open }) => {
      const loc = await fresh();
      const a = await open(loc);
      const b = await open(loc);
      const now = T0 + 20_000;
      const first = packs(['pk-1', T0, [sumPoint(REQ, [1, 2]), sumPoint(ERR, [1])]], ['pk-2', T0 + 10_000, [sumPoint(REQ, [4])]]);
      assert.deepEqual(await a.storeMetrics(ag('x'), first, now), { stored: 3, duplicatePacks: 0, late: 0 });
      // The sidecar failed over and sends the unacked batch again, to B.
      assert.deepEqual(await b.storeMetrics(ag('x'), first, now), { stored: 0, duplicatePacks: 2, late: 0 });
      // Another agent's pack of the same id is its own.
      assert.equal((await b.storeMetrics(ag('y'), packs(['pk-1', T0, [sumPoint(REQ, [9])]]), now)).stored, 1);
      // At once through both: stored once, the other a duplicate.
      const racing = packs(['pk-3', T0, [sumPoint(REQ, [100])]]);
      const results = await Promise.all([a.storeMetrics(ag('x'), racing, now), b.storeMetrics(ag('x'), racing, now)]);
      assert.deepEqual(results.map((r) => r.duplicatePacks).sort(), [0, 1]);
      const rows = await b.queryMetrics({ agent: 'x', name: 'http.requests' });
      assert.deepEqual(
        rows.map((r) => [r.project, r.agentId, r.name, r.tags, r.kind, r.ts, r.intervalMs, r.count, r.sum, r.min, r.max, r.p50]),
        [
          ['p', 'x', 'http.requests', { route: '/pay' }, 'counter', T0, 10_000, 3, 103, 1, 100, null],
          ['p', 'x', 'http.requests', { route: '/pay' }, 'counter', T0 + 10_000, 10_000, 1, 4, 4, 4, null],
        ],
      );
      const minute = await a.queryMetrics({ agent: 'x', name: 'http.requests', rollup: true });
      assert.deepEqual(
        minute.map((r) => [r.ts, r.intervalMs, r.count, r.sum]),
        [[T0, 60_000, 4, 107]],
      );
      // A minute final for rollup_grace_ms: its points are dropped and counted, the pack acked.
      const late = await a.storeMetrics(ag('x'), packs(['pk-old', T0 - 600_000, [sumPoint(REQ, [1])]]), now);
      assert.deepEqual(late, { stored: 0, duplicatePacks: 0, late: 1 });
    });

    storeIt(f, 'stores text items and lists them, newest first; registrations once per agent', async ({ fresh, open }) => {
      const loc = await fresh();
      const a = await open(loc);
      const b = await open(loc);
      const items: TextItem[] = [
        {
          kind: 'trace',
          origin: ORIGIN,
          trace: { txid: 't1', traceId: 'tr-1', spanId: 's1', name: 'POST /pay', startTime: T0, durationMs: 12, steps: [], error: 'boom' },
        },
        { kind: 'event', origin: ORIGIN, event: { ts: T0 + 1, type: 'deploy', message: 'v42' } },
        { kind: 'snapshot', origin: ORIGIN, snapshot: { ts: T0 + 2, kind: 'heap', data: { used: 1 } } },
        { kind: 'activeStack', origin: ORIGIN, stack: { txid: 't2', name: 'GET /', ts: T0 + 3, elapsedMs: 3, frames: ['a'] } },
        { kind: 'btRegistration', origin: ORIGIN, name: 'POST /pay', ts: T0 },
      ];
      assert.deepEqual(await a.storeText(ag('x'), items), { traces: 1, activeStacks: 1, events: 1, snapshots: 1, btRegistrations: 1, btDuplicates: 0 });
      const again = await b.storeText(ag('x'), [
        { kind: 'btRegistration', origin: ORIGIN, name: 'POST /pay', ts: T0 + 9 },
        { kind: 'event', origin: ORIGIN, event: { ts: T0 + 9, type: 'tick', message: 'later' } },
      ]);
      assert.deepEqual([again.btRegistrations, again.btDuplicates, again.events], [0, 1, 1]);
      const origin = { project: 'p', agentId: 'x', app: 'shop', instanceId: 'i-1' };
      assert.deepEqual(await a.listTraces({ traceId: 'tr-1' }), [
        {
          ...origin,
          txid: 't1',
          traceId: 'tr-1',
          name: 'POST /pay',
          startTime: T0,
          durationMs: 12,
          error: 'boom',
          trace: { txid: 't1', traceId: 'tr-1', spanId: 's1', name: 'POST /pay', startTime: T0, durationMs: 12, steps: [], error: 'boom' },
        },
      ]);
      assert.deepEqual(
        (await b.listEvents({ agent: 'x' })).map((e) => [e.project, e.agentId, e.ts, e.type, e.message]),
        [
          ['p', 'x', T0 + 9, 'tick', 'later'],
          ['p', 'x', T0 + 1, 'deploy', 'v42'],
        ],
      );
      assert.deepEqual(await b.listSnapshots(), [{ ...origin, ts: T0 + 2, kind: 'heap', data: { used: 1 } }]);
      assert.deepEqual(await b.listBtRegistrations(), [{ project: 'p', agentId: 'x', name: 'POST /pay', app: 'shop', firstSeenAt: T0 }]);
      const counts = await a.counts();
      assert.deepEqual([counts.traces, counts.events, counts.snapshots, counts.active_stacks, counts.bt_registrations], [1, 2, 1, 1, 1]);
    });

    storeIt(f, 'prunes rows older than a time, at most maxRows at a time, and keeps the newer ones', async ({ fresh, open }) => {
      const s = await open(await fresh());
      const now = T0 + 20_000;
      const dayAgo = T0 - 86_400_000;
      // Stored a day ago (then on time): points, minute rollups and the pack's id are old.
      assert.equal((await s.storeMetrics(ag('x'), packs(['old', dayAgo, [sumPoint(REQ, [1]), sumPoint(ERR, [1])]]), dayAgo + 20_000)).stored, 2);
      await s.storeMetrics(ag('x'), packs(['new', T0, [sumPoint(REQ, [2])]]), now);
      await s.storeText(ag('x'), [
        { kind: 'event', origin: ORIGIN, event: { ts: dayAgo, type: 'old', message: '' } },
        { kind: 'event', origin: ORIGIN, event: { ts: T0, type: 'new', message: '' } },
      ]);
      let total = 0;
      for (let n = await s.prune(T0 - 1000, 2); n > 0; n = await s.prune(T0 - 1000, 2)) {
        assert.ok(n <= 2, `a batch deleted ${n} rows`);
        total += n;
      }
      // 2 points, 2 minute rollups, 1 pack id, 1 event.
      assert.equal(total, 6);
      assert.deepEqual(
        (await s.queryMetrics({ agent: 'x' })).map((r) => [r.ts, r.sum]),
        [[T0, 2]],
      );
      assert.deepEqual(
        (await s.queryMetrics({ agent: 'x', rollup: true })).map((r) => [r.ts, r.sum]),
        [[T0, 2]],
      );
      // The old pack's id went with it; the new one's stays (a resend is still a duplicate).
      assert.equal((await s.storeMetrics(ag('x'), packs(['new', T0, [sumPoint(REQ, [2])]]), now)).duplicatePacks, 1);
      assert.deepEqual(
        (await s.listEvents()).map((e) => e.type),
        ['new'],
      );
    });
  });
}

// ------------------------------------------------------------------ data: metrics, text items, queries, prune

const D0 = Date.UTC(2026, 0, 1, 12, 0, 0);

function counterPoint(name: string, n: number, route = '/pay'): MetricPoint {
  const tags = { route };
  return {
    series: { key: encodeSeries(MetricKind.Counter, name, tags).toString('latin1'), kind: MetricKind.Counter, name, tags },
    count: n,
    sum: n,
    min: 1,
    max: 1,
    last: Number.NaN,
    sketch: null,
  };
}

function histogramPoint(values: number[]): MetricPoint {
  const tags = { route: '/pay' };
  const sketch = new Sketch();
  for (const v of values) sketch.add(v);
  return {
    series: { key: encodeSeries(MetricKind.Histogram, 'latency', tags).toString('latin1'), kind: MetricKind.Histogram, name: 'latency', tags },
    count: values.length,
    sum: values.reduce((a, b) => a + b, 0),
    min: Math.min(...values),
    max: Math.max(...values),
    last: Number.NaN,
    sketch,
  };
}

/** Through the upstream codec, as the agent server hands packs over. */
const viaWire = (...ps: UpMetricPack[]): UpMetricPack[] => decodeMetricBatch(encodeMetricBatch(ps));
const mpack = (packId: string, intervalStart: number, points: MetricPoint[]): UpMetricPack => ({ packId, intervalStart, intervalMs: 10_000, points });

for (const f of storeFactories()) {
  describe(`store contract (${f.name}): data, merges and queries`, () => {
    storeIt(f, 'stores each pack once across collectors, also when both store it at once', async ({ fresh, open }) => {
      const loc = await fresh();
      const a = await open(loc, { rollupGraceMs: 120_000 });
      const b = await open(loc, { rollupGraceMs: 120_000 });
      const now = D0 + 30_000;
      const p1 = viaWire(mpack('p1', D0, [counterPoint('req', 2), histogramPoint([1, 2, 3])]));
      assert.deepEqual(await a.storeMetrics(ag('w'), p1, now), { stored: 2, duplicatePacks: 0, late: 0 });
      assert.deepEqual(await b.storeMetrics(ag('w'), p1, now), { stored: 0, duplicatePacks: 1, late: 0 });
      // The same pack id of another agent (here: another project) is another pack.
      assert.deepEqual(await b.storeMetrics(ag('w', 'q'), p1, now), { stored: 2, duplicatePacks: 0, late: 0 });
      const many = Array.from({ length: 20 }, (_, i) => mpack(`m${i}`, D0 + (i % 3) * 10_000, [counterPoint('req', 1), histogramPoint([i + 1])]));
      const rs = await Promise.all([
        ...many.map((p) => a.storeMetrics(ag('w'), viaWire(p), now)),
        ...many.map((p) => b.storeMetrics(ag('w'), viaWire(p), now)),
      ]);
      assert.equal(
        rs.reduce((n, r) => n + r.stored, 0),
        40,
      );
      assert.equal(
        rs.reduce((n, r) => n + r.duplicatePacks, 0),
        20,
      );
      const [minute] = await a.queryMetrics({ project: 'p', agent: 'w', name: 'latency', rollup: true });
      assert.equal(minute?.count, 3 + 20, 'every value once in the minute');
      assert.equal(minute?.intervalMs, 60_000);
      const [req] = await b.queryMetrics({ project: 'p', agent: 'w', name: 'req', rollup: true });
      assert.deepEqual([req?.count, req?.sum, req?.kind, req?.p50], [22, 22, 'counter', null]);
    });

    storeIt(f, 'drops and counts points of a final minute, and answers queries by filter, limit and order', async ({ fresh, open }) => {
      const s = await open(await fresh(), { rollupGraceMs: 60_000 });
      // The minute at D0 is final (D0 + 2 min), the next one is not yet (D0 + 3 min).
      const now = D0 + 170_000;
      assert.deepEqual(await s.storeMetrics(ag('w'), viaWire(mpack('old', D0, [counterPoint('req', 1)])), now), { stored: 0, duplicatePacks: 0, late: 1 });
      for (let i = 0; i < 5; i++)
        await s.storeMetrics(ag('w'), viaWire(mpack(`n${i}`, D0 + 60_000 + i * 10_000, [counterPoint('req', 1), counterPoint('err', 1)])), now);
      assert.equal((await s.queryMetrics()).length, 10);
      const req = await s.queryMetrics({ name: 'req' });
      assert.deepEqual(
        req.map((r) => r.ts),
        [0, 1, 2, 3, 4].map((i) => D0 + 60_000 + i * 10_000),
        'oldest first',
      );
      assert.deepEqual(
        (await s.queryMetrics({ name: 'req', limit: 2 })).map((r) => r.ts),
        [D0 + 60_000 + 30_000, D0 + 60_000 + 40_000],
        'the most recent `limit`',
      );
      assert.equal((await s.queryMetrics({ from: D0 + 80_000, to: D0 + 100_000 })).length, 4);
      assert.equal((await s.queryMetrics({ project: 'other' })).length, 0);
      assert.equal((await s.queryMetrics({ agent: 'w', rollup: true })).length, 2);
    });

    storeIt(f, 'stores text items, registrations once per agent, and lists them newest first', async ({ fresh, open }) => {
      const s = await open(await fresh());
      const o = { app: 'shop', instanceId: 'i1', pid: 1 };
      const items: TextItem[] = [
        { kind: 'trace', origin: o, trace: { txid: 't1', traceId: 'T', spanId: 's', name: '/pay', startTime: D0, durationMs: 5, steps: [] } },
        { kind: 'trace', origin: o, trace: { txid: 't2', traceId: 'U', spanId: 's', name: '/cart', startTime: D0 + 1, durationMs: 6, steps: [], error: 'x' } },
        { kind: 'event', origin: o, event: { ts: D0, type: 'deploy', message: 'v2' } },
        { kind: 'snapshot', origin: o, snapshot: { ts: D0, kind: 'heap', data: { used: 1 } } },
        { kind: 'activeStack', origin: o, stack: { txid: 't3', name: '/slow', ts: D0, elapsedMs: 900, frames: ['f'] } },
        { kind: 'btRegistration', origin: o, name: '/pay', ts: D0 },
        { kind: 'btRegistration', origin: o, name: '/pay', ts: D0 + 1 },
      ];
      assert.deepEqual(await s.storeText(ag('w'), items), { traces: 2, activeStacks: 1, events: 1, snapshots: 1, btRegistrations: 1, btDuplicates: 1 });
      assert.deepEqual(await s.storeText(ag('w', 'q'), items.slice(5)), {
        traces: 0,
        activeStacks: 0,
        events: 0,
        snapshots: 0,
        btRegistrations: 1,
        btDuplicates: 1,
      });
      assert.deepEqual(
        (await s.listTraces()).map((t) => t.txid),
        ['t2', 't1'],
      );
      assert.deepEqual(
        (await s.listTraces({ traceId: 'T' })).map((t) => [t.txid, t.error]),
        [['t1', null]],
      );
      assert.equal((await s.listTraces({ name: '/cart' }))[0]?.error, 'x');
      assert.deepEqual((await s.listEvents({ project: 'p' }))[0]?.event, { ts: D0, type: 'deploy', message: 'v2' });
      assert.deepEqual((await s.listSnapshots({ agent: 'w' }))[0]?.data, { used: 1 });
      assert.deepEqual(
        (await s.listBtRegistrations()).map((r) => [r.project, r.name, r.firstSeenAt]),
        [
          ['p', '/pay', D0],
          ['q', '/pay', D0],
        ],
      );
      const c = await s.counts();
      assert.deepEqual([c.traces, c.events, c.snapshots, c.active_stacks, c.bt_registrations], [2, 1, 1, 1, 2]);
    });

    storeIt(f, 'prunes rows older than a time in batches of at most maxRows', async ({ fresh, open }) => {
      const s = await open(await fresh(), { rollupGraceMs: 120_000 });
      const old = D0 - 20 * 86_400_000;
      for (let i = 0; i < 6; i++) await s.storeMetrics(ag('w'), viaWire(mpack(`o${i}`, old + i * 10_000, [counterPoint('req', 1)])), old + 1000);
      await s.storeMetrics(ag('w'), viaWire(mpack('new', D0, [counterPoint('req', 1)])), D0 + 1000);
      const o = { app: 'shop', instanceId: 'i1', pid: 1 };
      await s.storeText(ag('w'), [
        { kind: 'trace', origin: o, trace: { txid: 'old', traceId: 'T', spanId: 's', name: '/pay', startTime: old, durationMs: 5, steps: [] } },
        { kind: 'trace', origin: o, trace: { txid: 'new', traceId: 'T', spanId: 's', name: '/pay', startTime: D0, durationMs: 5, steps: [] } },
      ]);
      const batches: number[] = [];
      for (let n = -1; n !== 0; ) {
        n = await s.prune(D0 - 86_400_000, 4);
        assert.ok(n <= 4);
        batches.push(n);
      }
      // 6 points, 1 rollup minute, 6 packs, 1 trace.
      assert.equal(
        batches.reduce((a, b) => a + b, 0),
        14,
      );
      assert.ok(batches.length >= 4);
      assert.deepEqual(
        (await s.queryMetrics()).map((r) => r.ts),
        [D0],
      );
      assert.deepEqual(
        (await s.listTraces()).map((t) => t.txid),
        ['new'],
      );
    });
  });
}
