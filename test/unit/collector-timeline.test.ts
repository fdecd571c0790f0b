/**
 * The collector's timeline at its real default durations (DESIGN §7), on a fake clock: the agent
 * server listens on a real port, agents speak the real upstream protocol over real TCP, the API
 * answers real HTTP, and only time is the test's. Five minutes of license release and thirty of
 * retention take milliseconds, and every boundary is checked on both sides, to the millisecond.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { after, afterEach, describe, test } from 'node:test';
import {
  type AgentServer,
  CollectorStats,
  type Logger,
  SqliteCollectorStore,
  SqliteStore,
  Tunnel,
  closeServer,
  createHttpApi,
  createLogger,
  defaultSettings,
  ROLLUP_MS,
  listen,
  minuteOf,
  startAgentServer,
} from '@apm-sidecar/collector';
import type { AccessKey } from '@apm-sidecar/proto/upstream';
import { getJson } from '../helpers/collector';
import { FakeClock } from '../helpers/fake-clock';
import { sleep, tempDir, waitFor } from '../helpers/procs';
import { ManualTunnel, RawAgent } from '../helpers/raw-agent';

const tmp = tempDir('apm-coll-timeline-');
after(() => tmp.cleanup());

const S = defaultSettings();

interface Rig {
  clock: FakeClock;
  store: SqliteStore;
  stats: CollectorStats;
  key: AccessKey;
  agents: AgentServer;
  httpPort: number;
  tunnel: Tunnel;
  row(agentId: string): ReturnType<SqliteStore['listAgents']>[number] | undefined;
  connect(agentId: string): RawAgent;
}

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

let rigs = 0;

/** A collector (agent server and HTTP API) at the default settings, sharing one fake clock. */
async function rig(licenses = 0, log: Logger = createLogger('silent')): Promise<Rig> {
  const clock = new FakeClock();
  const store = SqliteStore.open(`${tmp.dir}/rig-${++rigs}`);
  const stats = new CollectorStats();
  const key = store.createKey('timeline', clock.now());
  const agents = await startAgentServer({
    host: '127.0.0.1',
    port: 0,
    store: new SqliteCollectorStore(store),
    stats,
    log,
    licenses,
    idlePingMs: S.idle_ping_ms,
    stallAfterMs: S.stall_after_ms,
    licenseReleaseMs: S.license_release_ms,
    maxFrameBytes: S.max_frame_bytes,
    handshakeTimeoutMs: S.handshake_timeout_ms,
    maxConnections: S.max_connections,
    maxConnectionsPerIp: S.max_connections_per_ip,
    clock,
  });
  const tunnel = new Tunnel({
    agents,
    log,
    sessionTimeoutMs: S.tunnel_session_timeout_ms,
    handshakeTimeoutMs: S.handshake_timeout_ms,
    maxBodyBytes: S.max_frame_bytes + 1024,
  });
  const http: Server = createHttpApi({
    store: new SqliteCollectorStore(store),
    stats,
    log,
    disconnectedRetentionMs: S.disconnected_retention_ms,
    clock,
    extraRoutes: (req, res) => tunnel.route(req, res),
  });
  const httpPort = (await listen(http, '127.0.0.1', 0)).port;
  const raw: RawAgent[] = [];
  cleanups.push(async () => {
    for (const a of raw) a.destroy();
    tunnel.close();
    await agents.close();
    await closeServer(http, 0);
    store.close();
  });
  return {
    clock,
    store,
    stats,
    key,
    agents,
    httpPort,
    tunnel,
    row: (agentId) => store.listAgents().find((a) => a.agentId === agentId),
    connect: (agentId) => {
      const a = new RawAgent(agents.port, key, agentId);
      raw.push(a);
      return a;
    },
  };
}

async function licensed(a: RawAgent): Promise<NonNullable<RawAgent['license']>> {
  return waitFor(`${a.agentId} to get its license answer`, () => a.license);
}

describe('the collector timeline at the default durations, on a fake clock', () => {
  test('the defaults are the contract: license_release_ms 300000, disconnected_retention_ms 1800000, idle_ping_ms 120000, stall_after_ms 60000', () => {
    assert.deepEqual(
      [S.license_release_ms, S.disconnected_retention_ms, S.idle_ping_ms, S.stall_after_ms, S.handshake_timeout_ms],
      [300_000, 1_800_000, 120_000, 60_000, 10_000],
    );
  });

  test('--licenses 1: a disconnected agent holds its license for 299999 ms (another agent is refused), at 300000 it is freed and the other takes it', async () => {
    const r = await rig(1);
    const a = r.connect('agent-a');
    assert.equal((await licensed(a)).granted, true);
    const t0 = r.clock.now();
    a.destroy();
    await waitFor('agent A to be marked disconnected', () => r.row('agent-a')?.state === 'disconnected');
    assert.equal(r.row('agent-a')?.stateSince, t0, 'disconnected when its connection closed');

    r.clock.advance(299_999);
    assert.equal(r.row('agent-a')?.licensed, true, 'the license is still held at 299999 ms');
    const b = r.connect('agent-b');
    const refused = await licensed(b);
    assert.equal(refused.granted, false, 'agent B is refused at 299999 ms');
    assert.match(refused.reason, /all 1 licenses are in use/);
    await waitFor('the refused connection to be closed', () => b.closed);
    const rowB = r.row('agent-b');
    assert.deepEqual([rowB?.state, rowB?.licensed], ['disconnected', false], 'listed greyed, not live');

    r.clock.advance(1);
    assert.equal(r.row('agent-a')?.licensed, false, 'released at exactly 300000 ms');
    const b2 = r.connect('agent-b');
    const grant = await licensed(b2);
    assert.equal(grant.granted, true, 'agent B takes the freed license');
    assert.match(grant.reason, /license 1 of 1/);
    await waitFor('agent B to be live', () => r.row('agent-b')?.state === 'live');
    assert.equal(r.row('agent-b')?.licensed, true);
  });

  test('--licenses 1: another project’s agent with the same agent_id is refused each time it tries; the holder stays live, licensed and connected', async () => {
    const r = await rig(1);
    const holder = r.connect('victim');
    assert.equal((await licensed(holder)).granted, true);
    await waitFor('the holder to be live', () => r.row('victim')?.state === 'live');
    const otherKey = r.store.createKey('other-project', r.clock.now());
    for (let i = 0; i < 3; i++) {
      const intruder = new RawAgent(r.agents.port, otherKey, 'victim');
      try {
        const answer = await licensed(intruder);
        assert.equal(answer.granted, false, `attempt ${i + 1} refused`);
        await waitFor('the refused connection to be closed', () => intruder.closed);
      } finally {
        intruder.destroy();
      }
      r.clock.advance(1000);
    }
    const rows = r.store.listAgents().filter((a) => a.agentId === 'victim');
    assert.deepEqual(rows.map((a) => [a.projectId, a.state, a.licensed]).sort(), [
      [otherKey.projectId, 'disconnected', false],
      [r.key.projectId, 'live', true],
    ]);
    assert.deepEqual(holder.errors, [], 'the holder was not told anything (no ERR_REPLACED)');
    assert.equal(holder.closed, false);
    assert.equal(r.stats.sessions.tcp, 1);
  });

  test('an agent back before license_release_ms keeps its license: no release fires later', async () => {
    const r = await rig(1);
    const a = r.connect('agent-a');
    assert.equal((await licensed(a)).granted, true);
    a.destroy();
    await waitFor('agent A to be marked disconnected', () => r.row('agent-a')?.state === 'disconnected');
    r.clock.advance(299_999);
    const back = r.connect('agent-a');
    const kept = await licensed(back);
    assert.deepEqual(kept, { granted: true, reason: 'license kept' });
    // The release timer was cleared: it does not fire at 300000 ms, nor later (less than an idle period,
    // so the ping the agent answers over real I/O cannot go unanswered on the fake clock).
    r.clock.advance(100_000);
    assert.equal(r.row('agent-a')?.licensed, true);
    assert.equal(r.row('agent-a')?.state, 'stalled', 'connected all along (no data sent, so stalled, not disconnected)');
    const other = r.connect('agent-b');
    assert.equal((await licensed(other)).granted, false, 'the one license is still agent A’s');
  });

  test('a disconnected agent is listed by /api/agents until disconnected_retention_ms (1800000) and gone 1 ms after', async () => {
    const r = await rig();
    const a = r.connect('agent-gone');
    await licensed(a);
    const t0 = r.clock.now();
    a.destroy();
    await waitFor('the agent to be marked disconnected', () => r.row('agent-gone')?.state === 'disconnected');
    const listed = async () => (await getJson<{ agentId: string; state: string }[]>(r.httpPort, '/api/agents')).body.filter((x) => x.agentId === 'agent-gone');

    r.clock.advanceTo(t0 + 1_800_000);
    assert.deepEqual(
      (await listed()).map((x) => x.state),
      ['disconnected'],
      'still listed (greyed) at 1800000 ms',
    );
    r.clock.advance(1);
    assert.deepEqual(await listed(), [], 'gone from the list after 1800000 ms');
    assert.equal(r.row('agent-gone')?.state, 'disconnected', 'the store keeps the row: only the listing hides it');
  });

  test('no data for stall_after_ms (60000): stalled; data: live; idle for idle_ping_ms (120000): pinged; a ping unanswered for another idle_ping_ms: disconnected', async () => {
    const r = await rig();
    const a = r.connect('agent-idle');
    await licensed(a);
    await waitFor('the agent to be live', () => r.row('agent-idle')?.state === 'live');
    const t0 = r.clock.now();
    const state = () => [r.row('agent-idle')?.state, r.row('agent-idle')?.stateSince];

    r.clock.advanceTo(t0 + 59_999);
    assert.deepEqual(state(), ['live', t0], 'live at 59999 ms');
    r.clock.advance(1);
    assert.deepEqual(state(), ['stalled', t0 + 60_000], 'stalled at 60000 ms');

    r.clock.advanceTo(t0 + 120_000);
    // The ping carries the collector's time when sent: exactly idle_ping_ms after the last bytes received.
    await waitFor('the collector to ping', () => a.pings.length === 1);
    assert.deepEqual(a.pings, [t0 + 120_000]);
    await waitFor('the pong to reach the collector', () => r.stats.frames.Pong === 1);
    assert.equal(r.row('agent-idle')?.state, 'stalled', 'a live connection without data stays stalled, not disconnected');
    a.sendData(t0 + 120_000);
    await waitFor('data to make the agent live again', () => r.row('agent-idle')?.state === 'live');
    assert.equal(r.row('agent-idle')?.stateSince, t0 + 120_000);

    // Stalled again stall_after_ms after that data; pinged idle_ping_ms after it, and this time unanswered.
    a.answerPings = false;
    r.clock.advanceTo(t0 + 179_999);
    assert.equal(r.row('agent-idle')?.state, 'live');
    r.clock.advance(1);
    assert.deepEqual(state(), ['stalled', t0 + 180_000]);
    r.clock.advanceTo(t0 + 240_000);
    await waitFor('the second ping', () => a.pings.length === 2);
    assert.deepEqual(a.pings, [t0 + 120_000, t0 + 240_000], 'one ping per idle period');
    r.clock.advanceTo(t0 + 359_999);
    assert.equal(r.row('agent-idle')?.state, 'stalled', 'the unanswered ping has another idle_ping_ms');
    assert.equal(a.closed, false);
    r.clock.advance(1);
    assert.deepEqual(state(), ['disconnected', t0 + 360_000], 'disconnected when the ping went unanswered for idle_ping_ms');
    await waitFor('the connection to be closed', () => a.closed);
    assert.equal(a.pings.length, 2);
  });

  test('a pack for a minute final at rollup_grace_ms (120000) after it ends is dropped, counted and acked; the session carries on, with no error and no close', async () => {
    const r = await rig();
    const a = r.connect('agent-late');
    await licensed(a);
    const t0 = r.clock.now();
    const previous = minuteOf(t0) - ROLLUP_MS;
    const final = previous + ROLLUP_MS + S.rollup_grace_ms;
    assert.ok(final - t0 < S.idle_ping_ms, 'the test stays within one idle period');

    r.clock.advanceTo(final - 1);
    a.sendPack('on-time', previous, [2]);
    await waitFor('the on-time pack to be acked', () => a.acks.length === 1);
    assert.equal(r.stats.received.metricPoints, 1, 'stored 1 ms before its minute is final');
    r.clock.advance(1);
    a.sendPack('late', previous, [3, 4]);
    await waitFor('the late pack to be acked', () => a.acks.length === 2);
    assert.equal(r.stats.droppedLate, 2, 'both points of the late pack counted');
    assert.equal(r.stats.received.metricPoints, 1, 'and not stored');
    assert.deepEqual(
      r.store.queryMetrics({ name: 'raw.n' }).map((p) => p.sum),
      [2],
    );
    // A resend of an acked pack is a duplicate, acked again: the sidecar is never asked to retry.
    a.sendPack('late', previous, [3, 4]);
    await waitFor('the resent pack to be acked', () => a.acks.length === 3);
    assert.deepEqual([r.stats.duplicatePacks, r.stats.droppedLate], [1, 2]);
    assert.ok((a.acks[1] as number) > (a.acks[0] as number) && (a.acks[2] as number) > (a.acks[1] as number), `acks in order: ${a.acks}`);

    // Nothing ends the session: pinged and answered through two idle periods, no error, still open and live.
    // (Liveness is checked every quarter of the shorter duration, so a period is idle_ping_ms plus one check.)
    const check = Math.min(S.idle_ping_ms, S.stall_after_ms) / 4;
    r.clock.advance(S.idle_ping_ms + check);
    await waitFor('the first ping', () => a.pings.length === 1);
    await waitFor('its pong', () => r.stats.frames.Pong === 1);
    a.sendData(r.clock.now());
    await waitFor('the data to be acked', () => a.acks.length === 4);
    r.clock.advance(S.idle_ping_ms + check);
    await waitFor('the second ping', () => a.pings.length === 2);
    await waitFor('its pong', () => r.stats.frames.Pong === 2);
    assert.deepEqual(a.errors, []);
    assert.equal(a.closed, false);
    assert.equal(r.stats.sessions.tcp, 1, 'one session throughout');
    assert.equal(r.row('agent-late')?.state, 'stalled', 'connected (no data since the last pack)');
  });

  test('pre-auth refusals are logged at most once a second per code on the clock: at 999 ms the next is suppressed, at 1000 ms it is logged with the count suppressed', async () => {
    const logFile = `${tmp.dir}/refusals-${rigs + 1}.jsonl`;
    const r = await rig(0, createLogger('info', logFile));
    const wrong = { projectId: r.key.projectId, secret: Buffer.alloc(32, 9) };
    const refuse = async (): Promise<void> => {
      const a = new RawAgent(r.agents.port, wrong, 'intruder');
      try {
        await waitFor('the refused connection to be closed', () => a.closed);
      } finally {
        a.destroy();
      }
    };
    const logged = () =>
      readFileSync(logFile, 'utf8')
        .split('\n')
        .filter((l) => l.length > 0)
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .filter((l) => l.code === 'ERR_BAD_KEY');
    await refuse();
    assert.equal(logged().length, 1);
    r.clock.advance(999);
    await refuse();
    assert.equal(r.stats.rejected.badKey, 2, 'every refusal is counted');
    assert.equal(logged().length, 1, 'the second, 999 ms later, is not logged');
    r.clock.advance(1);
    await refuse();
    assert.equal(r.stats.rejected.badKey, 3);
    const lines = logged();
    assert.equal(lines.length, 2, 'the third, 1000 ms after the first line, is');
    assert.equal(lines[1]?.suppressed, 1, 'with how many were not');
  });

  test('the agent server’s close resolves only after every connection’s end is written to the store (the store may be closed right after)', async () => {
    const r = await rig();
    const a = r.connect('agent-closing');
    await licensed(a);
    await waitFor('the agent to be live', () => r.row('agent-closing')?.state === 'live');
    a.destroy();
    await r.agents.close();
    assert.equal(r.row('agent-closing')?.state, 'disconnected', 'written before close resolved');
    assert.equal(r.stats.sessions.tcp, 0);
  });

  test('an HTTP-tunnel session with no request for tunnel_session_timeout_ms (60000) expires at 60000 ms, not before: the agent is disconnected and the session gone (410)', async () => {
    const r = await rig();
    const tun = new ManualTunnel(r.httpPort);
    const a = new RawAgent(r.httpPort, r.key, 'agent-http', tun);
    await new Promise((res) => tun.once('connect', res));
    assert.equal(await tun.post(), 200, 'the ClientHello');
    assert.equal(await tun.post(), 200, 'ClientFinished and AgentInfo');
    assert.equal(a.license?.granted, true);
    assert.equal(r.stats.sessions.http, 1);
    const t0 = r.clock.now();

    r.clock.advanceTo(t0 + 59_999);
    assert.equal(r.tunnel.size, 1, 'the session is kept at 59999 ms');
    assert.equal(r.row('agent-http')?.state, 'live');
    r.clock.advance(1);
    assert.equal(r.tunnel.size, 0, 'expired at 60000 ms');
    assert.deepEqual([r.row('agent-http')?.state, r.row('agent-http')?.stateSince], ['disconnected', t0 + 60_000]);
    assert.equal(r.stats.sessions.http, 0);
    assert.equal(await tun.post(), 410, 'the agent must start a new session');
  });

  test('a connection not through the handshake within handshake_timeout_ms (10000) is refused at 10000 ms, not before', async () => {
    const r = await rig();
    const { connect } = await import('node:net');
    const sock = connect({ host: '127.0.0.1', port: r.agents.port });
    let closed = false;
    sock.on('error', () => {});
    sock.resume();
    sock.on('close', () => {
      closed = true;
    });
    cleanups.push(() => sock.destroy());
    await new Promise((res) => sock.once('connect', res));
    // The server has accepted it (and set its deadline) once it holds a connection timer.
    await waitFor('the connection to be accepted', () => r.clock.pending >= 2);
    r.clock.advance(9_999);
    assert.equal(r.stats.rejected.handshakeTimeout, 0, 'not refused at 9999 ms');
    r.clock.advance(1);
    assert.equal(r.stats.rejected.handshakeTimeout, 1, 'refused at 10000 ms');
    // The refusal is flushed, then the connection is dropped 200 ms later whatever the peer does.
    r.clock.advance(200);
    await waitFor('the refused connection to be closed by the collector', () => closed);
  });
  test('a frame trickling in for 60000 ms: an agent that reads with tcp_so_timeout 60000 hears a ping every 20000–30000 ms meanwhile; one that did not say so hears none', async () => {
    const r = await rig();
    for (const soTimeoutMs of [60_000, undefined]) {
      const id = `slow-link-${soTimeoutMs ?? 'unsaid'}`;
      const a = new RawAgent(r.agents.port, r.key, id, undefined, soTimeoutMs === undefined ? {} : { soTimeoutMs });
      cleanups.push(() => a.destroy());
      // A pong written now would land inside the frame being sent (a real sidecar's follows the frame).
      a.answerPings = false;
      await licensed(a);
      // The license was the collector's last write: the keepalive counts from it.
      const t0 = r.clock.now();
      const frame = a.packFrame(
        `${id}-1`,
        t0,
        Array.from({ length: 200 }, (_, i) => i),
      );
      const pieces = 12;
      const size = Math.ceil(frame.length / pieces);
      for (let i = 0; i < pieces - 1; i++) {
        a.sock.write(frame.subarray(i * size, (i + 1) * size));
        // Paces the writes so each piece lands before the clock moves on (a late one only counts as more recent).
        await sleep(10);
        r.clock.advance(5000);
      }
      a.sock.write(frame.subarray((pieces - 1) * size));
      // The ack is the barrier: a ping sent while the frame trickled in arrives before it.
      await waitFor(`${id}: the frame stored and acked`, () => a.acks.length === 1);
      if (soTimeoutMs === undefined) {
        assert.deepEqual(a.pings, [], 'no keepalive for an agent that did not give its read timeout');
        continue;
      }
      const at = a.pings.map((p) => p - t0);
      assert.ok(at.length >= 2, `pings at ${at.join(', ')} ms`);
      let last = 0;
      for (const p of at) {
        assert.ok(p - last >= 20_000 && p - last <= 30_000, `pings at ${at.join(', ')} ms: every 20000–30000 ms (a third of 60000, checked every 10000)`);
        last = p;
      }
    }
  });
});
