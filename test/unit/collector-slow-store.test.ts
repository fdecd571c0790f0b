/**
 * A store that takes its time (PostgreSQL over a network): the collector handles an agent's
 * frames one after another while a batch commits, and frames that wait must still be the bytes
 * the agent sent, however the TCP stream cut them into chunks.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import {
  type CollectorStore,
  CollectorStats,
  SETTINGS,
  handshakeNacl,
  SqliteCollectorStore,
  SqliteStore,
  createLogger,
  startAgentServer,
} from '@apm-sidecar/collector';
import { RawAgent } from '../helpers/raw-agent';
import { sleep, tempDir, waitFor } from '../helpers/procs';
import { connect } from 'node:net';
import { ClientHandshake, parseAccessKey, formatAccessKey } from '@apm-sidecar/proto/upstream';

const tmp = tempDir('apm-slow-store-');
const cleanups: (() => Promise<void> | void)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
  tmp.cleanup();
});

/** The SQLite store with every call of `method` held `delayMs` before it is made. */
function slowed(store: CollectorStore, delayMs: number, method: 'storeMetrics' | 'connectAgent' = 'storeMetrics'): CollectorStore {
  return new Proxy(store, {
    get(target, prop, receiver) {
      if (prop === method)
        return async (...args: unknown[]) => {
          await sleep(delayMs);
          return (target[method] as (...a: unknown[]) => Promise<unknown>)(...args);
        };
      const v: unknown = Reflect.get(target, prop, receiver);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
}

const S = Object.fromEntries(Object.entries(SETTINGS).map(([k, v]) => [k, v.def])) as Record<keyof typeof SETTINGS, number>;

function serverOptions() {
  return {
    host: '127.0.0.1',
    port: 0,
    log: createLogger('silent'),
    idlePingMs: S.idle_ping_ms,
    stallAfterMs: S.stall_after_ms,
    licenseReleaseMs: S.license_release_ms,
    maxFrameBytes: S.max_frame_bytes,
    handshakeTimeoutMs: S.handshake_timeout_ms,
    maxConnections: S.max_connections,
    maxConnectionsPerIp: S.max_connections_per_ip,
  };
}

test('frames that wait behind a slow commit are handled as sent, whatever chunks they arrived in: all stored, in order, none refused', async () => {
  const sqlite = SqliteStore.open(`${tmp.dir}/c`);
  const key = sqlite.createKey('slow');
  const stats = new CollectorStats();
  const agents = await startAgentServer({
    ...serverOptions(),
    store: slowed(new SqliteCollectorStore(sqlite), 25),
    stats,
  });
  cleanups.push(async () => {
    await agents.close();
    sqlite.close();
  });
  const agent = new RawAgent(agents.port, parseAccessKey(formatAccessKey(key)), 'slow-agent');
  cleanups.push(() => agent.destroy());
  await waitFor('the license', () => agent.license);
  const t = Math.floor(Date.now() / 60_000) * 60_000;
  const frames = Array.from({ length: 24 }, (_, i) => agent.packFrame(`p${i}`, t, [i + 1, ...Array.from({ length: 400 }, () => 1)]));
  // The frames' bytes in small uneven pieces, each its own write after a pause, so the collector's
  // parser keeps partial frames and hands out frames from memory it will reuse.
  const bytes = Buffer.concat(frames);
  for (let off = 0, i = 0; off < bytes.length; i++) {
    const n = 3001 + ((i * 5303) % 7919);
    agent.sock.write(bytes.subarray(off, off + n));
    off += n;
    await sleep(1);
  }
  const expected = (24 * 25) / 2 + 24 * 400;
  const stored = () => sqlite.queryMetrics({ name: 'raw.n' }).reduce((a, p) => a + p.sum, 0);
  await waitFor(
    'every pack stored, or the session refused',
    () => agent.errors.length > 0 || agent.closed || (stored() === expected && agent.acks.length === 24),
    20000,
  );
  assert.deepEqual(agent.errors, []);
  assert.equal(stats.rejected.tampered + stats.rejected.frameGap + stats.rejected.malformed, 0);
  assert.equal(stored(), expected, 'every pack stored once');
  assert.equal(agent.acks.length, 24, 'each frame acked once its batch committed');
});

test('an agent gone while its connection is being committed ends disconnected, and its license is released', async () => {
  const sqlite = SqliteStore.open(`${tmp.dir}/gone`);
  const key = sqlite.createKey('gone');
  sqlite.setLicenseCapacity(1);
  const agents = await startAgentServer({
    ...serverOptions(),
    licenseReleaseMs: 300,
    store: slowed(new SqliteCollectorStore(sqlite), 300, 'connectAgent'),
    stats: new CollectorStats(),
  });
  cleanups.push(async () => {
    await agents.close();
    sqlite.close();
  });
  const state = (id: string) => sqlite.listAgents().find((a) => a.agentId === id);
  const early = new RawAgent(agents.port, parseAccessKey(formatAccessKey(key)), 'early-leaver');
  cleanups.push(() => early.destroy());
  // Its AgentInfo is on the way once the collector sent ServerHello: leave while it is committed.
  await waitFor('the handshake under way', () => early.sealed);
  await sleep(100);
  assert.equal(early.license, null, 'still being committed');
  early.destroy();
  await waitFor('the agent registered', () => state('early-leaver') !== undefined, 5000);
  await waitFor('the agent shown disconnected', () => state('early-leaver')?.state === 'disconnected', 5000);
  await waitFor('its license released', () => state('early-leaver')?.licensed === false, 5000);
  // Its license is freed license_release_ms later: another agent gets the only one.
  const next = new RawAgent(agents.port, parseAccessKey(formatAccessKey(key)), 'next-agent');
  cleanups.push(() => next.destroy());
  await waitFor('the next agent licensed', () => next.license?.granted === true, 10000);
});

test('an agent gone while its connection is committed ends disconnected even while a stalled retry names it', async () => {
  const sqlite = SqliteStore.open(`${tmp.dir}/gone-stalled`);
  const key = sqlite.createKey('gone2');
  const agents = await startAgentServer({
    ...serverOptions(),
    licenseReleaseMs: 300,
    store: slowed(new SqliteCollectorStore(sqlite), 300, 'connectAgent'),
    stats: new CollectorStats(),
  });
  cleanups.push(async () => {
    await agents.close();
    sqlite.close();
  });
  const state = (id: string) => sqlite.listAgents().find((a) => a.agentId === id);
  const access = parseAccessKey(formatAccessKey(key));
  const leaver = new RawAgent(agents.port, access, 'victim');
  cleanups.push(() => leaver.destroy());
  await waitFor('the handshake under way', () => leaver.sealed);
  await sleep(50);
  leaver.destroy();
  // Its retry sends a ClientHello and then stalls (or never had the key): still in the handshake
  // when the commit ends, it holds no session and must not keep the agent live.
  const stalled = connect({ host: '127.0.0.1', port: agents.port });
  stalled.on('error', () => {});
  cleanups.push(() => {
    stalled.destroy();
  });
  stalled.write(new ClientHandshake(handshakeNacl, access, 'victim').hello());
  await waitFor('the agent shown disconnected', () => state('victim')?.state === 'disconnected', 5000);
  await waitFor('its license released', () => state('victim')?.licensed === false, 5000);
  assert.equal(stalled.destroyed, false, 'the retry was still in its handshake');
});
