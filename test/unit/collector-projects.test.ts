import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { MetricKind, type MetricPoint, type Series, encodeSeries } from '@apm-sidecar/proto';
import { type TextItem, type UpMetricPack, keyFingerprint } from '@apm-sidecar/proto/upstream';
import { MIGRATIONS, SCHEMA_VERSION, SqliteStore } from '@apm-sidecar/collector';
import { tempDirsRemovedAfter } from '../helpers/temp-dirs';

/** The schema before agents were keyed by (project, agent_id): what existing collectors have on disk. */
const SCHEMA_BEFORE_PROJECTS = 4;

const tempDir = tempDirsRemovedAfter('apm-proj-');

const T0 = 1_700_000_040_000;
const orders: Series = { key: encodeSeries(MetricKind.Counter, 'orders', {}).toString('latin1'), kind: MetricKind.Counter, name: 'orders', tags: {} };
const pt = (n: number): MetricPoint => ({ series: orders, count: 1, sum: n, min: n, max: n, last: Number.NaN, sketch: null });
const pack = (packId: string, n: number): UpMetricPack => ({ packId, intervalStart: T0, intervalMs: 10_000, points: [pt(n)] });
const origin = { app: 'shop', instanceId: 'i-1', pid: 1 };
const event = (message: string): TextItem => ({ kind: 'event', origin, event: { ts: T0, type: 'deploy', message } });
const A = { projectId: 'alpha-000001', agentId: 'pod' };
const B = { projectId: 'beta-000002', agentId: 'pod' };

describe('SqliteStore: the same agent_id in two projects is two agents', () => {
  it('keeps their rows, states, licenses, packs, points, text items and registrations apart', () => {
    const store = SqliteStore.open(tempDir(), { seenPersistMs: 0 });
    try {
      store.agentConnected(A.projectId, { agentId: 'pod', host: 'a-host', version: '1', apps: ['shop'] }, T0);
      store.agentConnected(B.projectId, { agentId: 'pod', host: 'b-host', version: '1', apps: ['bank'] }, T0);
      store.agentLicensed(B, true);
      store.setAgentState(A, 'disconnected', { at: T0 + 10, reason: 'test' });
      store.agentSeen(B, T0 + 20);
      assert.deepEqual(
        store.listAgents().map((r) => [r.projectId, r.agentId, r.host, r.state, r.licensed, r.lastSeenAt]),
        [
          [A.projectId, 'pod', 'a-host', 'disconnected', false, T0],
          [B.projectId, 'pod', 'b-host', 'live', true, T0 + 20],
        ],
      );
      assert.deepEqual(
        store.listAgents({ project: B.projectId }).map((r) => r.host),
        ['b-host'],
      );

      // The same pack id from the other project is another pack, not a duplicate.
      assert.deepEqual(store.storeMetrics(A, [pack('p1', 2567)], T0 + 1), { stored: 1, duplicatePacks: 0, late: 0 });
      assert.deepEqual(store.storeMetrics(B, [pack('p1', 1_483_000)], T0 + 1), { stored: 1, duplicatePacks: 0, late: 0 });
      assert.equal(store.storeMetrics(B, [pack('p1', 1_483_000)], T0 + 2).duplicatePacks, 1);
      const sum = (q: Parameters<SqliteStore['queryMetrics']>[0]) =>
        store
          .queryMetrics(q)
          .map((r) => [r.project, r.agentId, r.sum])
          .sort((x, y) => String(x[0]).localeCompare(String(y[0])));
      assert.deepEqual(sum({ project: A.projectId }), [[A.projectId, 'pod', 2567]]);
      assert.deepEqual(sum({ project: B.projectId, agent: 'pod', rollup: true }), [[B.projectId, 'pod', 1_483_000]]);
      assert.deepEqual(sum({ agent: 'pod' }), [
        [A.projectId, 'pod', 2567],
        [B.projectId, 'pod', 1_483_000],
      ]);

      store.storeText(A, [event('a1'), { kind: 'btRegistration', origin, name: 'GET /', ts: T0 }]);
      store.storeText(B, [event('b1'), { kind: 'btRegistration', origin, name: 'GET /', ts: T0 }]);
      assert.deepEqual(
        store.listEvents({ project: A.projectId }).map((e) => [e.project, e.message]),
        [[A.projectId, 'a1']],
      );
      assert.deepEqual(
        store.listEvents({ agent: 'pod' }).map((e) => [e.project, e.message]),
        [
          [B.projectId, 'b1'],
          [A.projectId, 'a1'],
        ],
      );
      assert.deepEqual(
        store.listBtRegistrations().map((r) => [r.project, r.agentId, r.name]),
        [
          [A.projectId, 'pod', 'GET /'],
          [B.projectId, 'pod', 'GET /'],
        ],
      );
    } finally {
      store.close();
    }
  });
});

describe('schema migration to (project, agent_id)', () => {
  /** A database as the previous schema wrote it, with one row in every table. */
  function oldDatabase(dir: string, projects: [string, string][], agents: [string, string][]): void {
    const db = new Database(join(dir, 'collector.db'));
    for (const m of MIGRATIONS.slice(0, SCHEMA_BEFORE_PROJECTS)) db.exec(m);
    db.pragma(`user_version = ${SCHEMA_BEFORE_PROJECTS}`);
    projects.forEach(([id, name], i) => {
      db.prepare('INSERT INTO keys (project_id, name, secret, created_at) VALUES (?, ?, ?, ?)').run(id, name, Buffer.alloc(32, i + 1), T0 + i);
    });
    for (const [agent, project] of agents) {
      db.prepare(
        "INSERT INTO agents (agent_id, project_id, app, apps_json, host, version, state, state_since, first_seen, last_seen, licensed) VALUES (?, ?, 'shop', '[\"shop\"]', 'h', '1', 'disconnected', ?, ?, ?, 1)",
      ).run(agent, project, T0, T0 - 5000, T0);
    }
    // Data of every listed agent and of one never listed ('ghost').
    for (const agent of [...agents.map(([a]) => a), 'ghost']) {
      db.prepare('INSERT INTO metric_packs (agent_id, pack_id, received_at) VALUES (?, ?, ?)').run(agent, `${agent}-pack`, T0);
      for (const t of ['metric_points', 'metric_rollups']) {
        db.prepare(
          `INSERT INTO ${t} (agent_id, series_key, name, tags_json, kind, interval_start, interval_ms, count, sum, min, max) VALUES (?, ?, 'orders', '{}', 0, ?, 10000, 2, ?, 1, 9)`,
        ).run(agent, Buffer.from(orders.key, 'latin1'), T0, agent.length);
      }
      db.prepare(
        "INSERT INTO traces (agent_id, app, instance_id, txid, trace_id, name, start_time, duration_ms, error, body_json) VALUES (?, 'shop', 'i', 't', 'tr', 'GET /', ?, 5, NULL, '{}')",
      ).run(agent, T0);
      db.prepare(
        "INSERT INTO active_stacks (agent_id, app, instance_id, txid, name, ts, elapsed_ms, body_json) VALUES (?, 'shop', 'i', 't', 'GET /', ?, 1, '{}')",
      ).run(agent, T0);
      db.prepare("INSERT INTO events (agent_id, app, instance_id, ts, type, message, body_json) VALUES (?, 'shop', 'i', ?, 'deploy', ?, '{}')").run(
        agent,
        T0,
        agent,
      );
      db.prepare("INSERT INTO snapshots (agent_id, app, instance_id, ts, kind, body_json) VALUES (?, 'shop', 'i', ?, 'heap', '{}')").run(agent, T0);
      db.prepare("INSERT INTO bt_registrations (agent_id, name, app, first_seen) VALUES (?, 'GET /', 'shop', ?)").run(agent, T0);
    }
    db.close();
  }

  it(`a database at schema ${SCHEMA_BEFORE_PROJECTS} opens with every row kept and attributed to its agent's project`, () => {
    const dir = tempDir();
    oldDatabase(
      dir,
      [
        ['shop-aaaaaa', 'Shop'],
        ['bank-bbbbbb', 'Bank'],
      ],
      [
        ['pod-1', 'shop-aaaaaa'],
        ['pod-2', 'bank-bbbbbb'],
      ],
    );
    const store = SqliteStore.open(dir);
    try {
      assert.equal(store.pragma('user_version'), SCHEMA_VERSION);
      assert.deepEqual(store.counts(), {
        agents: 2,
        projects: 2,
        keys: 2,
        metric_packs: 3,
        metric_points: 3,
        traces: 3,
        active_stacks: 3,
        events: 3,
        snapshots: 3,
        bt_registrations: 3,
      });
      // Keys: one per project, same secret, valid, listed by fingerprint.
      assert.deepEqual(
        store.listKeys().map((k) => [k.projectId, k.name, k.createdAt, k.fingerprint, k.revokedAt]),
        [
          ['shop-aaaaaa', 'Shop', T0, keyFingerprint(Buffer.alloc(32, 1)), null],
          ['bank-bbbbbb', 'Bank', T0 + 1, keyFingerprint(Buffer.alloc(32, 2)), null],
        ],
      );
      assert.deepEqual(
        store.projectKeys('bank-bbbbbb').map((k) => k.secret),
        [Buffer.alloc(32, 2)],
      );
      assert.deepEqual(
        store.listAgents().map((a) => [a.projectId, a.agentId, a.firstSeenAt, a.licensed]),
        [
          ['shop-aaaaaa', 'pod-1', T0 - 5000, true],
          ['bank-bbbbbb', 'pod-2', T0 - 5000, true],
        ],
      );
      // Each agent's data is under its project; two projects, so the unlisted agent's is under ''.
      const who = (rows: { project: string; agentId: string }[]) => rows.map((r) => `${r.project}/${r.agentId}`).sort();
      const expected = ['/ghost', 'bank-bbbbbb/pod-2', 'shop-aaaaaa/pod-1'];
      assert.deepEqual(who(store.queryMetrics({})), expected);
      assert.deepEqual(who(store.queryMetrics({ rollup: true })), expected);
      assert.deepEqual(who(store.listTraces()), expected);
      assert.deepEqual(who(store.listEvents()), expected);
      assert.deepEqual(who(store.listBtRegistrations()), expected);
      assert.deepEqual(
        store.queryMetrics({ project: 'shop-aaaaaa' }).map((r) => [r.agentId, r.count, r.sum, r.min, r.max]),
        [['pod-1', 2, 5, 1, 9]],
      );
      // Packs stored before the migration are still recognised when resent by their agent.
      assert.equal(store.storeMetrics({ projectId: 'shop-aaaaaa', agentId: 'pod-1' }, [pack('pod-1-pack', 1)], T0 + 1).duplicatePacks, 1);
      assert.equal(store.storeMetrics({ projectId: 'bank-bbbbbb', agentId: 'pod-1' }, [pack('pod-1-pack', 1)], T0 + 1).stored, 1);
      // The agent keeps its identity when it reconnects with its project.
      store.agentConnected('shop-aaaaaa', { agentId: 'pod-1', host: 'h', version: '2', apps: ['shop'] }, T0 + 100);
      assert.equal(store.listAgents({ project: 'shop-aaaaaa' }).length, 1);
      assert.equal(store.listAgents({ project: 'shop-aaaaaa' })[0]?.firstSeenAt, T0 - 5000);
      // A second key for a migrated project: a rotation.
      assert.equal(store.createKey('Shop').projectId, 'shop-aaaaaa');
      assert.equal(store.projectKeys('shop-aaaaaa').length, 2);
    } finally {
      store.close();
    }
  });

  it('two projects that share a name (made before rotation existed): keys create by that name is refused as ambiguous, by id it rotates', () => {
    const dir = tempDir();
    oldDatabase(
      dir,
      [
        ['shop-aaaaaa', 'Shop'],
        ['shop-bbbbbb', 'Shop'],
      ],
      [],
    );
    const store = SqliteStore.open(dir);
    try {
      assert.throws(
        () => store.createKey('Shop'),
        (err: unknown) => (err as { code?: string }).code === 'ERR_PROJECT_NAME' && /shop-aaaaaa, shop-bbbbbb/.test((err as Error).message),
      );
      assert.equal(store.createKey('shop-bbbbbb').projectId, 'shop-bbbbbb');
      assert.deepEqual(
        store.listKeys().map((k) => k.projectId),
        ['shop-aaaaaa', 'shop-bbbbbb', 'shop-bbbbbb'],
      );
    } finally {
      store.close();
    }
  });

  it('with a single project, data of an agent never listed goes to that project', () => {
    const dir = tempDir();
    oldDatabase(dir, [['solo-cccccc', 'Solo']], [['pod-1', 'solo-cccccc']]);
    const store = SqliteStore.open(dir);
    try {
      assert.deepEqual([...new Set(store.listEvents().map((e) => e.project))], ['solo-cccccc']);
      assert.deepEqual([...new Set(store.queryMetrics({}).map((e) => e.project))], ['solo-cccccc']);
    } finally {
      store.close();
    }
  });
});
