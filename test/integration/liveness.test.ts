// Agent liveness on the collector (DESIGN §7, seed 002 — Introscope "how does the EM detect that an
// agent has disconnected"), with real processes and every duration scaled down:
//
//   - a failed write / closed connection marks the agent disconnected at once;
//   - an idle connection is pinged every idle_ping_ms; no pong within another idle_ping_ms: disconnected;
//   - an HTTP-tunnel session with no request for tunnel_session_timeout_ms expires: disconnected;
//   - a disconnected agent stays listed (greyed) for disconnected_retention_ms and keeps its identity
//     when it comes back;
//   - a live connection that carries no data for stall_after_ms is `stalled` (a hung app behind a
//     healthy connection thread).
//
// Latencies are measured and printed with t.diagnostic; the assertions only use generous timeouts.
import assert from 'node:assert/strict';
import { connect as tcpConnect } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { FrameParser, MetricKind, encodeSeries } from '@apm-sidecar/proto';
import {
  ClientHandshake,
  Direction,
  Inner,
  Opener,
  Sealer,
  UpstreamType,
  encodeAgentInfo,
  encodeMetricBatch,
  formatAccessKey,
  parseAccessKey,
} from '@apm-sidecar/proto/upstream';
import nacl from 'tweetnacl';
import { type CollectorProc, createKey, getJson, startCollector } from '../helpers/collector';
import { type Proc, type SidecarProc, sleep, startApp, startSidecar, statusJson, tempDir, waitFor } from '../helpers/procs';

const IDLE_PING_MS = 300;
const STALL_AFTER_MS = 800;
// Long enough that a sidecar restarted at once (about 0.3 s, over 2 s on a loaded machine) is back within it.
const RETENTION_MS = 4000;
const TUNNEL_TIMEOUT_MS = 800;

/** The collector's liveness clock, scaled from minutes to a fraction of a second. */
const COLLECTOR_FAST = [
  '--set',
  `idle_ping_ms=${IDLE_PING_MS}`,
  '--set',
  `stall_after_ms=${STALL_AFTER_MS}`,
  '--set',
  `disconnected_retention_ms=${RETENTION_MS}`,
  '--set',
  `tunnel_session_timeout_ms=${TUNNEL_TIMEOUT_MS}`,
];

/**
 * The sidecar sends a metric pack every 200 ms while its app records (well under stall_after_ms),
 * reconnects 100 ms after a loss, and keeps tcp_so_timeout at 60 s so that it never notices a dead
 * link before the collector does: what is tested is the collector's detection.
 *
 * Over http, tcp_so_timeout=60000 makes the tunnel poll every 1000 ms (min(1000, tcp_so_timeout / 6)),
 * longer than tunnel_session_timeout_ms=800: an http sidecar keeps its session here only because its
 * app's data makes it send a request every ~200 ms (an idle one would lose its session every second).
 */
const SIDECAR_FAST = [
  '--set',
  'flush_ms=50',
  '--set',
  'metric_interval_ms=200',
  '--set',
  'tcp_connection_timeout=1000',
  '--set',
  'tcp_so_timeout=60000',
  '--set',
  'reconnect_schedule=100',
];

/** The collector's one log line per agent disconnection (the ping's own warning also ends in "agent disconnected"). */
const DISCONNECTED = /^agent disconnected$/;

type State = 'live' | 'stalled' | 'disconnected';
interface ApiAgent {
  agentId: string;
  app: string;
  host: string;
  state: State;
  lastSeenAt: string;
  licensed: boolean;
  firstSeenAt?: unknown;
}

async function agents(c: CollectorProc): Promise<ApiAgent[]> {
  const r = await getJson<ApiAgent[]>(c.httpPort, '/api/agents', c.httpHost);
  assert.equal(r.status, 200);
  return r.body;
}

async function agentOf(c: CollectorProc, id: string): Promise<ApiAgent | undefined> {
  return (await agents(c)).find((a) => a.agentId === id);
}

/** Poll /api/agents (every 10 ms, so the measured latency is close to the real one) until `id` is in `state`. */
async function waitState(c: CollectorProc, id: string, state: State, timeoutMs: number): Promise<{ agent: ApiAgent; at: number }> {
  const agent = await waitFor(
    `agent ${id} to be ${state}`,
    async () => {
      const a = await agentOf(c, id);
      return a?.state === state ? a : null;
    },
    timeoutMs,
    10,
  );
  return { agent, at: Date.now() };
}

/** Live, with its app named: the app's shim has reached the sidecar and the sidecar told the collector. */
async function waitReady(c: CollectorProc, id: string): Promise<ApiAgent> {
  let last: ApiAgent | undefined;
  try {
    return await waitFor(
      `agent ${id} to be live with its app`,
      async () => {
        last = await agentOf(c, id);
        return last?.state === 'live' && last.app === 'recorder' ? last : null;
      },
      10000,
    );
  } catch (err) {
    throw new Error(`${(err as Error).message}; last seen: ${JSON.stringify(last)}`);
  }
}

/** The collector's log line `msg` about `agentId` written at or after `since` (waits for stdout to catch up). */
function logLine(c: CollectorProc, msg: string | RegExp, agentId: string, since: number): Promise<Record<string, unknown>> {
  return waitFor(
    `the collector to log "${String(msg)}" for ${agentId}`,
    () => c.logs(msg).find((l) => l.agentId === agentId && Date.parse(l.time as string) >= since - 5),
    3000,
  );
}

/** The agent's row in the collector's database (read-only): its identity across sessions. */
function agentRows(c: CollectorProc, id: string): { agent_id: string; first_seen: number; project_id: string }[] {
  const db = new Database(join(c.dataDir, 'collector.db'), { readonly: true, fileMustExist: true });
  try {
    return db.prepare('SELECT agent_id, first_seen, project_id FROM agents WHERE agent_id = ?').all(id) as {
      agent_id: string;
      first_seen: number;
      project_id: string;
    }[];
  } finally {
    db.close();
  }
}

/** Send a signal if the process is still there (finally blocks: never leave anything stopped). */
function signal(p: Proc | null | undefined, sig: NodeJS.Signals): void {
  if (p?.alive !== true) return;
  try {
    process.kill(p.pid, sig);
  } catch {
    // already gone
  }
}

async function stopAll(...ps: (Proc | null | undefined)[]): Promise<void> {
  for (const p of ps) signal(p, 'SIGCONT');
  await Promise.all(ps.map((p) => p?.kill('SIGKILL')));
}

function sidecar(transport: 'tcp' | 'http', dir: string, c: CollectorProc, key: string, agentId: string, extra: string[] = []): Promise<SidecarProc> {
  const port = transport === 'tcp' ? c.port : c.httpPort;
  return startSidecar(
    dir,
    ['--transport', transport, '--server-host', '127.0.0.1', '--server-port', String(port), '--set', `agent_id=${agentId}`, ...SIDECAR_FAST, ...extra],
    {
      APM_SIDECAR_ACCESS_KEY: key,
    },
  );
}

/** The recorder fixture: an app recording metrics continuously through the shim into `sc`. */
async function recorder(sc: SidecarProc): Promise<Proc> {
  const app = startApp('recorder', { APM_SIDECAR_SOCKET: sc.socket, FLUSH_MS: '50' });
  await app.waitLine('the recorder app to start', (l) => l.ready === true);
  return app;
}

async function stats(c: CollectorProc): Promise<Record<string, any>> {
  return (await getJson(c.httpPort, '/api/stats', c.httpHost)).body;
}

// ---------------------------------------------------------------- Prometheus text

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parse Prometheus text format 0.0.4: samples, and the TYPE of each family. */
function parseProm(text: string): { samples: Sample[]; types: Map<string, string> } {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const ty = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (ty) {
      types.set(ty[1] as string, ty[2] as string);
      continue;
    }
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `a well-formed sample line: ${JSON.stringify(line)}`);
    const labels: Record<string, string> = {};
    if (m[2] !== undefined && m[2] !== '') {
      for (const pair of (m[2] as string).matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1] as string] = pair[2] as string;
    }
    samples.push({ name: m[1] as string, labels, value: Number(m[3]) });
  }
  return { samples, types };
}

function sample(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const s = samples.find((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v));
  return s?.value;
}

async function metricsText(c: CollectorProc): Promise<string> {
  const res = await fetch(`http://${c.httpHost}:${c.httpPort}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain/);
  return res.text();
}

// ---------------------------------------------------------------- a hand-driven agent

/** An agent on the real protocol, driven by hand: for what a sidecar never sends (points for a minute long final). */
async function rawAgent(port: number, key: string, agentId: string) {
  const sock = tcpConnect({ host: '127.0.0.1', port });
  const inner: number[] = [];
  const hs = new ClientHandshake(nacl, parseAccessKey(key), agentId);
  let sealer: Sealer | null = null;
  let opener: Opener | null = null;
  let closed = false;
  const parser = new FrameParser(1 << 24, (type, payload) => {
    if (type === UpstreamType.ServerHello) {
      const { finished, keys } = hs.serverHello(payload);
      sealer = new Sealer(nacl, keys, Direction.AgentToCollector);
      opener = new Opener(nacl, keys, Direction.CollectorToAgent);
      sock.write(finished);
      sock.write(sealer.text(Inner.AgentInfo, encodeAgentInfo({ agentId, host: 'raw', version: 'test', apps: ['raw'] })));
    } else if (opener !== null) {
      inner.push(opener.open(type, payload).inner);
    }
  });
  sock.on('data', (d) => parser.push(d));
  sock.on('close', () => {
    closed = true;
  });
  sock.on('error', () => {});
  await new Promise((r) => sock.once('connect', r));
  sock.write(hs.hello());
  await waitFor('the raw agent to be licensed', () => inner.includes(Inner.License));
  return { sock, inner, sealer: () => sealer as unknown as Sealer, closed: () => closed };
}

/** A ClientHello for a project the collector has no key for: refused in clear text, counted as badKey. */
async function badKeyHello(port: number): Promise<void> {
  const key = { projectId: 'no-such-project', secret: Buffer.alloc(32, 9) };
  assert.doesNotThrow(() => parseAccessKey(formatAccessKey(key)));
  const sock = tcpConnect({ host: '127.0.0.1', port });
  sock.on('error', () => {});
  const refused: number[] = [];
  const parser = new FrameParser(1 << 20, (type) => refused.push(type));
  sock.on('data', (d) => parser.push(d));
  await new Promise((r) => sock.once('connect', r));
  sock.write(new ClientHandshake(nacl, key, 'bad-key-agent').hello());
  await waitFor('the clear-text refusal', () => refused.includes(UpstreamType.HandshakeRejected));
  sock.destroy();
}

// ================================================================ TCP

describe('agent liveness over TCP (collector idle_ping_ms=300, stall_after_ms=800, disconnected_retention_ms=2000)', () => {
  const tmp = tempDir('apm-live-');
  let collector: CollectorProc;
  let key: string;
  before(async () => {
    const data = join(tmp.dir, 'collector');
    key = await createKey(data, 'live');
    collector = await startCollector(data, COLLECTOR_FAST);
  });
  after(async () => {
    await collector.kill('SIGTERM');
    tmp.cleanup();
  });

  test('kill -9 of the sidecar: the closed connection marks the agent disconnected at once (no ping needed), and it stays listed', async (t) => {
    const id = 'kill9-agent';
    const sc = await sidecar('tcp', join(tmp.dir, 'kill9'), collector, key, id);
    let app: Proc | null = null;
    try {
      app = await recorder(sc);
      await waitReady(collector, id);
      const t0 = Date.now();
      process.kill(sc.pid, 'SIGKILL');
      const { agent, at } = await waitState(collector, id, 'disconnected', 3000);
      const line = await logLine(collector, DISCONNECTED, id, t0);
      t.diagnostic(
        `kill -9 → disconnected in /api/agents: ${at - t0} ms (collector log: ${Date.parse(line.time as string) - t0} ms; idle_ping_ms is ${IDLE_PING_MS})`,
      );
      // Detected by the connection itself, not by the idle ping.
      assert.match(String(line.cause), /connection closed|write or read failed/);
      assert.equal(collector.logs('no answer to a ping').filter((l) => l.agentId === id).length, 0, 'not found by the ping');
      // Greyed, not gone: still listed with its identity.
      assert.equal(agent.app, 'recorder');
      assert.equal((await agents(collector)).filter((a) => a.agentId === id).length, 1);
      assert.equal(collector.alive, true);
    } finally {
      await stopAll(app, sc);
    }
  });

  test('an app hung behind a healthy connection (app SIGSTOPped, sidecar connected): stalled, not disconnected; SIGCONT → live', async (t) => {
    const id = 'stall-agent';
    const sc = await sidecar('tcp', join(tmp.dir, 'stall'), collector, key, id);
    let app: Proc | null = null;
    try {
      app = await recorder(sc);
      await waitReady(collector, id);
      const pongsBefore = (await stats(collector)).frames.Pong ?? 0;

      const t0 = Date.now();
      process.kill(app.pid, 'SIGSTOP');
      // What the app recorded before it stopped still reaches the collector (the last intervals
      // close after the stop): wait until the sidecar has nothing left to send, so that from then
      // on the collector can only be told "no data" — a slow machine can otherwise see the agent
      // stalled before that tail arrives, and live again with it.
      await waitFor(
        'the sidecar to have sent everything the app recorded',
        async () => {
          const st = await statusJson(sc.socket);
          return st.aggregation.openIntervals === 0 && st.queues.queue1.depth === 0 && st.upstream.inFlightFrames === 0;
        },
        5000,
      );
      const stalled = await waitState(collector, id, 'stalled', 5000);
      t.diagnostic(`app SIGSTOP → stalled: ${stalled.at - t0} ms (stall_after_ms is ${STALL_AFTER_MS})`);

      // The connection stays alive meanwhile: the idle session is pinged and the sidecar answers.
      // Three pings answered, each after idle_ping_ms of silence: at least three idle periods spent
      // stalled (the exact boundaries, at the default durations, are in collector-timeline.test.ts).
      await waitFor(
        'the idle session to be pinged and to answer three times',
        async () => ((await stats(collector)).frames.Pong ?? 0) >= pongsBefore + 3,
        10000,
      );
      assert.equal((await agentOf(collector, id))?.state, 'stalled', 'still stalled: a live connection without data is not disconnected');
      assert.equal(collector.logs(DISCONNECTED).filter((l) => l.agentId === id).length, 0);
      assert.equal(sc.alive, true);

      const t1 = Date.now();
      process.kill(app.pid, 'SIGCONT');
      const live = await waitState(collector, id, 'live', 5000);
      t.diagnostic(`app SIGCONT → live: ${live.at - t1} ms`);
      assert.equal(collector.logs(DISCONNECTED).filter((l) => l.agentId === id).length, 0, 'one session throughout');
      assert.equal((await agents(collector)).filter((a) => a.agentId === id).length, 1);
    } finally {
      await stopAll(app, sc);
    }
  });

  test('an open but silent TCP connection (sidecar SIGSTOPped) is found by the idle ping: disconnected; SIGCONT → it reconnects as the same agent', async (t) => {
    const id = 'silent-agent';
    const sc = await sidecar('tcp', join(tmp.dir, 'silent'), collector, key, id);
    let app: Proc | null = null;
    try {
      app = await recorder(sc);
      await waitReady(collector, id);
      const [row] = agentRows(collector, id);
      assert.ok(row, 'the agent has a row');
      const apiFirstSeen = (await agentOf(collector, id))?.firstSeenAt;

      const t0 = Date.now();
      process.kill(sc.pid, 'SIGSTOP');
      const gone = await waitState(collector, id, 'disconnected', 5000);
      const ping = await logLine(collector, 'no answer to a ping', id, t0);
      t.diagnostic(
        `sidecar SIGSTOP → disconnected: ${gone.at - t0} ms (collector log: ${Date.parse(ping.time as string) - t0} ms; expected about idle_ping_ms idle + idle_ping_ms without pong = ${2 * IDLE_PING_MS} ms)`,
      );
      const line = await logLine(collector, DISCONNECTED, id, t0);
      assert.equal(line.cause, 'ping unanswered');
      assert.equal((await agents(collector)).filter((a) => a.agentId === id).length, 1, 'still listed while disconnected');

      const sessionsBefore = sc.logs('connecting upstream').length;
      const t1 = Date.now();
      process.kill(sc.pid, 'SIGCONT');
      const back = await waitState(collector, id, 'live', 8000);
      t.diagnostic(`sidecar SIGCONT → live again: ${back.at - t1} ms`);
      assert.ok(sc.logs('upstream session ended').length >= 1, 'the sidecar saw its session closed');
      assert.ok(sc.logs('connecting upstream').length > sessionsBefore, 'the sidecar opened a new session');

      // Same identity: one row, same first-seen time, listed once, same app.
      const list = (await agents(collector)).filter((a) => a.agentId === id);
      assert.equal(list.length, 1, 'listed once');
      assert.equal(list[0]?.app, 'recorder');
      if (apiFirstSeen !== undefined) assert.deepEqual(list[0]?.firstSeenAt, apiFirstSeen);
      const rows = agentRows(collector, id);
      assert.equal(rows.length, 1);
      assert.equal(rows[0]?.first_seen, row.first_seen, 'first seen unchanged');
      assert.equal(rows[0]?.project_id, row.project_id);
    } finally {
      await stopAll(app, sc);
    }
  });

  test('back within disconnected_retention_ms: the same agent, live again, listed once; disconnected longer than that: gone from /api/agents', async (t) => {
    const id = 'retained-agent';
    const dir = join(tmp.dir, 'retained');
    let sc: SidecarProc | null = await sidecar('tcp', dir, collector, key, id);
    let app: Proc | null = null;
    try {
      app = await recorder(sc);
      await waitReady(collector, id);
      const [row] = agentRows(collector, id);
      assert.ok(row);

      // Killed and restarted at once: the agent never leaves the list.
      const t0 = Date.now();
      await sc.kill('SIGKILL');
      const down = await waitState(collector, id, 'disconnected', 3000);
      let hidden = 0;
      let polls = 0;
      const watching = (async () => {
        for (;;) {
          const a = await agentOf(collector, id);
          polls++;
          if (a === undefined) hidden++;
          if (a?.state === 'live' || Date.now() - t0 > 10000) return;
          await sleep(20);
        }
      })();
      sc = await sidecar('tcp', dir, collector, key, id);
      const up = await waitState(collector, id, 'live', 8000);
      await watching;
      t.diagnostic(
        `kill -9 → disconnected ${down.at - t0} ms; restart → live again ${up.at - down.at} ms after (retention ${RETENTION_MS} ms); ${polls} polls in between`,
      );
      assert.equal(hidden, 0, 'listed (greyed) during the whole gap');
      assert.equal((await agents(collector)).filter((a) => a.agentId === id).length, 1, 'listed once');
      assert.equal(agentRows(collector, id)[0]?.first_seen, row.first_seen, 'same identity');

      // Gone for longer than the retention: no longer listed.
      const t1 = Date.now();
      await sc.kill('SIGKILL');
      await waitState(collector, id, 'disconnected', 3000);
      await waitFor('the agent to leave /api/agents', async () => (await agentOf(collector, id)) === undefined, RETENTION_MS + 4000, 20);
      const goneAfter = Date.now() - t1;
      t.diagnostic(`disconnected → removed from /api/agents after ${goneAfter} ms (retention ${RETENTION_MS} ms)`);
      assert.ok(goneAfter >= RETENTION_MS, `kept listed for the retention (${goneAfter} ms ≥ ${RETENTION_MS} ms)`);
      assert.equal(agentRows(collector, id).length, 1, 'hidden, not deleted: the identity is kept');

      // And when it does come back, it is the same agent again.
      sc = await sidecar('tcp', dir, collector, key, id);
      await waitState(collector, id, 'live', 8000);
      assert.equal((await agents(collector)).filter((a) => a.agentId === id).length, 1);
      assert.equal(agentRows(collector, id)[0]?.first_seen, row.first_seen, 'first seen unchanged after a long absence');
    } finally {
      const last = sc;
      sc = null;
      await stopAll(app, last);
    }
  });
});

// ================================================================ licenses

describe('liveness and the license pool (--licenses 1, license_release_ms long)', () => {
  const tmp = tempDir('apm-live-l-');
  let collector: CollectorProc;
  let key: string;
  before(async () => {
    const data = join(tmp.dir, 'collector');
    key = await createKey(data, 'seats');
    collector = await startCollector(data, [...COLLECTOR_FAST, '--licenses', '1', '--set', 'license_release_ms=60000']);
  });
  after(async () => {
    await collector.kill('SIGTERM');
    tmp.cleanup();
  });

  test('an agent refused a license is not shown live; a disconnected agent keeps its seat and gets it back when it reconnects', async (t) => {
    const holder = await sidecar('tcp', join(tmp.dir, 'holder'), collector, key, 'seat-holder');
    let app: Proc | null = null;
    let other: SidecarProc | null = null;
    try {
      app = await recorder(holder);
      await waitReady(collector, 'seat-holder');
      assert.equal((await agentOf(collector, 'seat-holder'))?.licensed, true);

      // A second agent: told there is no license; it retries (reconnect_schedule=100) but is never live.
      other = await sidecar('tcp', join(tmp.dir, 'other'), collector, key, 'seat-other');
      await waitFor('the second agent to be refused', () => (other as SidecarProc).logs('upstream session ended').some((l) => l.code === 'ERR_NO_LICENSE'));
      const refusedBefore = (other as SidecarProc).logs('upstream session ended').length;
      const seen = new Set<string>();
      await waitFor(
        'a few refused retries',
        async () => {
          const a = await agentOf(collector, 'seat-other');
          if (a !== undefined) seen.add(`${a.state}/${a.licensed}`);
          return (other as SidecarProc).logs('upstream session ended').length >= refusedBefore + 3;
        },
        5000,
        10,
      );
      t.diagnostic(`the refused agent was listed as: ${[...seen].join(', ')}`);
      const refused = await agentOf(collector, 'seat-other');
      assert.equal(refused?.licensed, false);
      assert.notEqual(refused?.state, 'live', 'no session, no license: not live');

      // The holder goes silent and is found by the ping; its seat stays reserved for it.
      process.kill(holder.pid, 'SIGSTOP');
      await waitState(collector, 'seat-holder', 'disconnected', 5000);
      const endedBefore = (other as SidecarProc).logs('upstream session ended').length;
      await waitFor(
        'the second agent to retry while the seat is reserved',
        () => (other as SidecarProc).logs('upstream session ended').length >= endedBefore + 2,
        5000,
      );
      assert.ok(
        (other as SidecarProc)
          .logs('upstream session ended')
          .slice(endedBefore)
          .every((l) => l.code === 'ERR_NO_LICENSE'),
        'still refused: the seat is held for the disconnected agent',
      );
      assert.notEqual((await agentOf(collector, 'seat-other'))?.state, 'live');

      process.kill(holder.pid, 'SIGCONT');
      const back = await waitState(collector, 'seat-holder', 'live', 8000);
      assert.equal(back.agent.licensed, true, 'the returning agent gets its own seat back');
      assert.equal((await agentOf(collector, 'seat-other'))?.licensed, false);
    } finally {
      await stopAll(app, holder, other);
    }
  });
});

// ================================================================ HTTP tunnel and /metrics

describe('agent liveness over the HTTP tunnel, and the collector’s /metrics', () => {
  const tmp = tempDir('apm-live-h-');
  let collector: CollectorProc;
  let key: string;
  before(async () => {
    const data = join(tmp.dir, 'collector');
    key = await createKey(data, 'tunnel');
    // The idle ping and the stall clock are slowed here so that the tunnel's own session timeout is
    // the only thing that can notice the silent agent.
    collector = await startCollector(data, [...COLLECTOR_FAST, '--set', 'idle_ping_ms=20000', '--set', 'stall_after_ms=20000']);
  });
  after(async () => {
    await collector.kill('SIGTERM');
    tmp.cleanup();
  });

  test('a SIGSTOPped http-transport sidecar sends no request: the tunnel session expires after tunnel_session_timeout_ms → disconnected; SIGCONT → 410, new handshake, live', async (t) => {
    const id = 'tunnel-agent';
    const sc = await sidecar('http', join(tmp.dir, 'tunnel'), collector, key, id);
    let app: Proc | null = null;
    try {
      app = await recorder(sc);
      await waitReady(collector, id);
      const [row] = agentRows(collector, id);
      assert.ok(row);
      const handshakes = (await stats(collector)).frames.ClientHello ?? 0;

      const t0 = Date.now();
      process.kill(sc.pid, 'SIGSTOP');
      const gone = await waitState(collector, id, 'disconnected', 5000);
      const expired = collector.logs('tunnel session had no request').find((l) => Date.parse(l.time as string) >= t0);
      t.diagnostic(
        `http sidecar SIGSTOP → disconnected: ${gone.at - t0} ms (tunnel expiry logged after ${expired === undefined ? '?' : `${Date.parse(expired.time as string) - t0} ms`}; tunnel_session_timeout_ms is ${TUNNEL_TIMEOUT_MS})`,
      );
      assert.ok(expired, 'the collector expired the tunnel session');
      assert.equal(collector.logs('no answer to a ping').filter((l) => l.agentId === id).length, 0, 'not found by the (slowed) ping');
      assert.equal((await agents(collector)).filter((a) => a.agentId === id).length, 1, 'still listed while disconnected');

      const t1 = Date.now();
      process.kill(sc.pid, 'SIGCONT');
      const back = await waitState(collector, id, 'live', 8000);
      t.diagnostic(`http sidecar SIGCONT → live again: ${back.at - t1} ms`);
      const ended = sc.logs('upstream session ended').find((l) => Date.parse(l.time as string) >= t1);
      assert.equal(ended?.code, 'ERR_TUNNEL_SESSION', 'its next request was answered 410: session unknown or expired');
      assert.ok(((await stats(collector)).frames.ClientHello ?? 0) > handshakes, 'then a new handshake');
      assert.equal((await agents(collector)).filter((a) => a.agentId === id).length, 1, 'listed once');
      assert.equal(agentRows(collector, id)[0]?.first_seen, row.first_seen, 'same identity');
    } finally {
      await stopAll(app, sc);
    }
  });

  test('/metrics: sessions by transport (tcp and http), agents by state, frames by type, rejections by reason, late points dropped', async () => {
    // Sessions of earlier tests are gone (a killed http agent's tunnel session lingers until it expires).
    let left: unknown;
    await waitFor(
      'no session left from earlier tests',
      async () => {
        const st = await stats(collector);
        left = st.sessions;
        return st.sessions.tcp === 0 && st.sessions.http === 0;
      },
      5000,
    ).catch((err: Error) => {
      throw new Error(`${err.message}: sessions ${JSON.stringify(left)}`);
    });
    const tcp = await sidecar('tcp', join(tmp.dir, 'm-tcp'), collector, key, 'metrics-tcp');
    // Nothing is stopped here, so this one may poll more often than every 1000 ms (tcp_so_timeout / 6):
    // even while idle, its requests then keep the tunnel session (800 ms) alive.
    const http = await sidecar('http', join(tmp.dir, 'm-http'), collector, key, 'metrics-http', ['--set', 'tcp_so_timeout=3000']);
    const apps: Proc[] = [];
    let raw: Awaited<ReturnType<typeof rawAgent>> | null = null;
    try {
      apps.push(await recorder(tcp), await recorder(http));
      await waitReady(collector, 'metrics-tcp');
      await waitReady(collector, 'metrics-http');
      await waitFor('metric points from both', async () => (await stats(collector)).received.metricPoints > 0);

      // A refused handshake, and points for a minute that has long been final (dropped, counted, acked).
      const before = await stats(collector);
      await badKeyHello(collector.port);
      raw = await rawAgent(collector.port, key, 'metrics-raw');
      const late = ['x', 'y', 'z'].map((n) => ({
        series: { key: encodeSeries(MetricKind.Counter, 'late.points', { n }).toString('latin1'), kind: MetricKind.Counter, name: 'late.points', tags: { n } },
        count: 1,
        sum: 1,
        min: 1,
        max: 1,
        last: Number.NaN,
        sketch: null,
      }));
      const hourAgo = Date.now() - 3_600_000;
      const pack = { packId: 'late-1', intervalStart: hourAgo - (hourAgo % 10_000), intervalMs: 10_000, points: late };
      raw.sock.write(raw.sealer().numeric(Inner.MetricBatch, encodeMetricBatch([pack])));
      await waitFor('the late pack to be acked', () => raw?.inner.includes(Inner.Ack));

      const text = await metricsText(collector);
      const { samples, types } = parseProm(text);
      for (const s of samples)
        assert.ok(Number.isFinite(s.value) && s.value >= 0, `${s.name} ${JSON.stringify(s.labels)} = ${s.value} is a finite, non-negative number`);
      assert.equal(types.get('apm_collector_sessions'), 'gauge');
      assert.equal(types.get('apm_collector_agents'), 'gauge');
      assert.equal(types.get('apm_collector_frames_total'), 'counter');
      assert.equal(types.get('apm_collector_rejected_total'), 'counter');
      assert.equal(types.get('apm_collector_late_points_dropped_total'), 'counter');

      // Sessions by transport: both sidecars plus the raw agent (tcp) are connected now.
      assert.equal(sample(samples, 'apm_collector_sessions', { transport: 'tcp' }), 2, 'tcp sessions: the tcp sidecar and the raw agent');
      assert.equal(sample(samples, 'apm_collector_sessions', { transport: 'http' }), 1, 'http sessions: the http sidecar');

      // Agents by state: every state has a series; live agrees with what /api/agents lists as live.
      for (const st of ['live', 'stalled', 'disconnected'] as const)
        assert.notEqual(sample(samples, 'apm_collector_agents', { state: st }), undefined, `agents{state="${st}"}`);
      assert.ok((sample(samples, 'apm_collector_agents', { state: 'live' }) as number) >= 2);
      await waitFor(
        'agents{state="live"} to agree with /api/agents',
        async () => {
          const live = sample(parseProm(await metricsText(collector)).samples, 'apm_collector_agents', { state: 'live' });
          return live === (await agents(collector)).filter((a) => a.state === 'live').length;
        },
        3000,
      );

      // Frames by type: handshakes, agent infos, metric batches.
      const st = await stats(collector);
      for (const ty of ['ClientHello', 'ClientFinished', 'AgentInfo', 'MetricBatch']) {
        const v = sample(samples, 'apm_collector_frames_total', { type: ty });
        assert.ok(v !== undefined && v > 0, `frames_total{type="${ty}"} = ${v}`);
        assert.ok(v <= st.frames[ty], `frames_total{type="${ty}"} agrees with /api/stats (${v} ≤ ${st.frames[ty]})`);
      }
      assert.ok((sample(samples, 'apm_collector_frames_total', { type: 'ClientHello' }) as number) >= 4, 'two sidecars, the raw agent and the refused hello');

      // Rejections by reason: every reason has a series; the refused hello counted as badKey.
      for (const reason of ['badKey', 'replay', 'tampered', 'tooLarge'])
        assert.notEqual(sample(samples, 'apm_collector_rejected_total', { reason }), undefined, `rejected_total{reason="${reason}"}`);
      assert.equal(sample(samples, 'apm_collector_rejected_total', { reason: 'badKey' }), before.rejected.badKey + 1);
      assert.equal(sample(samples, 'apm_collector_rejected_total', { reason: 'tampered' }), before.rejected.tampered);

      // Late points: the three points for a final minute, dropped and counted (and acked above).
      assert.equal(sample(samples, 'apm_collector_late_points_dropped_total'), before.droppedLate + late.length);

      // The gauges follow the sessions: when the agents go, the sessions are gone too.
      raw.sock.destroy();
      await tcp.kill('SIGKILL');
      await waitState(collector, 'metrics-tcp', 'disconnected', 3000);
      await waitFor(
        'the tcp sessions gauge to drop to 0',
        async () => sample(parseProm(await metricsText(collector)).samples, 'apm_collector_sessions', { transport: 'tcp' }) === 0,
        3000,
      );
      const after = parseProm(await metricsText(collector)).samples;
      assert.equal(sample(after, 'apm_collector_sessions', { transport: 'http' }), 1);
      assert.ok((sample(after, 'apm_collector_agents', { state: 'disconnected' }) as number) >= 1, 'the killed agent counts as disconnected');
    } finally {
      raw?.sock.destroy();
      await stopAll(...apps, tcp, http);
    }
  });
});
