'use strict';
/**
 * Pre-authentication exhaustion: an honest agent's ack latency and handshake time, and the
 * collector's memory, without and then with an attacker holding unauthenticated connections.
 *
 *   node bench/preauth.js [--quick] [--seconds S] [--conns N] [--tunnel N]
 *                         [--handshake-timeout MS] [--collector-cli FILE]
 *
 *   --seconds            length of each phase (default 15; --quick 6)
 *   --conns              attacking TCP connections kept open (default 200)
 *   --tunnel             attacking first tunnel requests kept open (default 50)
 *   --handshake-timeout  the collector's handshake_timeout_ms (default 10000, the real default;
 *                        --quick 2000). Not passed with --collector-cli (an older build may not know it)
 *   --collector-cli FILE another build of the collector's cli.js (A/B: e.g. one from before the
 *                        pre-auth limits; its dependencies resolve from this repository)
 *
 * What runs (loopback, one machine): a real `apm-collector run`; the honest agent is the sidecar's
 * real UpstreamSession in this process, sending one small sealed text frame every 20 ms and timing
 * each until its ack; the attacker is bench/lib/preauth-attacker.js in its own process (half its
 * connections declare an 8 MiB ClientHello and send 16 KiB of it every 100 ms, half declare 4000
 * bytes and trickle a byte every 100 ms; tunnel requests declare an 8 MiB body; whatever the
 * collector closes is reopened 100 ms later). Phase 1 measures without the attacker, phase 2 with
 * it; in phase 2 a second honest agent also connects (connect → active timed). The collector's
 * RSS is sampled every 100 ms (/proc). Prints a Markdown table, then one JSON line. Nothing is
 * asserted (exit 0 unless the bench could not run).
 */
const { execFileSync, spawn } = require('node:child_process');
const { existsSync, mkdtempSync, readFileSync, rmSync } = require('node:fs');
const { tmpdir } = require('node:os');
const { join, resolve } = require('node:path');
const { performance } = require('node:perf_hooks');
const { num, quantile, table } = require('./lib/stats');

const ROOT = resolve(__dirname, '..');
for (const f of ['proto/dist/upstream/index.js', 'sidecar/dist/upstream/session.js', 'collector/dist/cli.js']) {
  if (!existsSync(join(ROOT, f))) {
    process.stderr.write(`bench/preauth: build the product first (npx tsc -b): missing ${f}\n`);
    process.exit(1);
  }
}
const up = require(join(ROOT, 'proto/dist/upstream/index.js'));
const { UpstreamSession } = require(join(ROOT, 'sidecar/dist/upstream/session.js'));

function arg(name, def) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : def;
}
const quick = process.argv.includes('--quick');
const SECONDS = Number(arg('--seconds', quick ? 6 : 15));
const CONNS = Number(arg('--conns', 200));
const TUNNEL = Number(arg('--tunnel', 50));
const HANDSHAKE_TIMEOUT = Number(arg('--handshake-timeout', quick ? 2000 : 10000));
const OTHER_CLI = arg('--collector-cli', undefined);
const COLLECTOR_CLI = OTHER_CLI !== undefined ? resolve(OTHER_CLI) : join(ROOT, 'collector/dist/cli.js');
const SEND_EVERY_MS = 20;

const children = new Set();
let tmp = null;
function cleanup() {
  for (const c of children) c.kill('SIGKILL');
  children.clear();
  if (tmp !== null) rmSync(tmp, { recursive: true, force: true });
  tmp = null;
}
process.on('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    cleanup();
    process.exit(130);
  });
}

const step = (m) => process.stderr.write(`[preauth] ${m}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function rssMb(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m === null ? Number.NaN : Number(m[1]) / 1024;
}

/** Spawn a node script; resolve with the child and the first stdout JSON line that `match` accepts. */
function startChild(script, args, env, match, what) {
  const c = spawn(process.execPath, [script, ...args], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(c);
  let stderr = '';
  c.stderr.on('data', (d) => {
    stderr = (stderr + d).slice(-4000);
  });
  return new Promise((res, rej) => {
    let buf = '';
    let found = false;
    const t = setTimeout(() => rej(new Error(`${what} did not start within 15 s: ${stderr}`)), 15_000);
    c.on('exit', (code) => {
      if (!found) {
        clearTimeout(t);
        rej(new Error(`${what} exited with ${code}: ${stderr}`));
      }
    });
    c.stdout.on('data', (d) => {
      buf += d;
      let i = buf.indexOf('\n');
      while (i >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        i = buf.indexOf('\n');
        let o = null;
        try {
          o = JSON.parse(line);
        } catch {
          continue;
        }
        if (c.onLine) c.onLine(o);
        if (found) continue;
        const v = match(o);
        if (v !== undefined) {
          found = true;
          clearTimeout(t);
          res({ child: c, value: v });
        }
      }
    });
  });
}

/** The sidecar's UpstreamSession to the collector; resolves when active, with the connect → active time. */
function openSession(port, key, agentId) {
  const h = { ack: () => {}, closed: null };
  return new Promise((res, rej) => {
    let settled = false;
    const t0 = performance.now();
    const s = new UpstreamSession(
      {
        host: '127.0.0.1',
        port,
        key,
        agentInfo: { agentId, host: 'bench', version: '0.1.0', apps: ['bench'] },
        connectTimeoutMs: 10_000,
        soTimeoutMs: 60_000,
        maxFrameBytes: 1 << 20,
      },
      {
        active: () => {
          settled = true;
          res({ s, h, ms: performance.now() - t0 });
        },
        ack: (c) => h.ack(c),
        drain: () => {},
        closed: (cause) => {
          if (!settled) {
            settled = true;
            rej(new Error(`honest session ${agentId} closed before active: ${cause}`));
          } else if (h.closed !== null) h.closed(cause);
        },
      },
    );
  });
}

/** One small sealed text frame every SEND_EVERY_MS for `ms`; returns each frame's send → ack time. */
async function ackLatencies(sess, ms, rss) {
  const sentAt = new Map();
  const lat = [];
  let lost = null;
  sess.h.ack = (c) => {
    const t = sentAt.get(c);
    if (t !== undefined) {
      lat.push(performance.now() - t);
      sentAt.delete(c);
    }
  };
  sess.h.closed = (cause) => {
    lost = cause;
  };
  const body = up.encodeTextBatch([
    { kind: 'event', origin: { app: 'bench', instanceId: 'i-1', pid: process.pid }, event: { ts: Date.now(), type: 'bench', message: 'ping' } },
  ]);
  const end = performance.now() + ms;
  while (performance.now() < end && lost === null) {
    sentAt.set(sess.s.sendText(up.Inner.TextBatch, body), performance.now());
    rss.sample();
    await sleep(SEND_EVERY_MS);
  }
  await sleep(500);
  return { lat, unacked: sentAt.size, lost };
}

function rssSampler(pid) {
  const r = { min: Number.POSITIVE_INFINITY, max: 0, last: 0 };
  r.sample = () => {
    try {
      const v = rssMb(pid);
      r.last = v;
      r.min = Math.min(r.min, v);
      r.max = Math.max(r.max, v);
    } catch {
      // the collector is gone: the numbers stay as they were
    }
  };
  return r;
}

async function main() {
  tmp = mkdtempSync(join(tmpdir(), 'apm-bench-preauth-'));
  const dataDir = join(tmp, 'collector');
  const childEnv = { NODE_PATH: join(ROOT, 'node_modules') };
  const keyOut = execFileSync(process.execPath, [COLLECTOR_CLI, 'keys', 'create', '--project', 'bench', '--data-dir', dataDir], {
    encoding: 'utf8',
    env: { ...process.env, ...childEnv },
  });
  const key = up.parseAccessKey(keyOut.trim().split('\n').pop());
  const sets = OTHER_CLI === undefined ? ['--set', `handshake_timeout_ms=${HANDSHAKE_TIMEOUT}`] : [];
  const col = await startChild(
    COLLECTOR_CLI,
    ['run', '--host', '127.0.0.1', '--port', '0', '--http', '127.0.0.1:0', '--data-dir', dataDir, ...sets],
    childEnv,
    (o) => (o.msg === 'listening' ? { agents: o.agents.port, http: o.http.port } : undefined),
    'collector',
  );
  const pid = col.child.pid;
  step(`collector ${COLLECTOR_CLI} pid ${pid}, agents :${col.value.agents}, http :${col.value.http}`);
  const agent = await openSession(col.value.agents, key, 'honest-1');
  await ackLatencies(agent, 1000, rssSampler(pid)); // warm-up

  step(`phase 1: no attack, ${SECONDS} s`);
  const rss1 = rssSampler(pid);
  rss1.sample();
  const rssBefore = rss1.last;
  const calm = await ackLatencies(agent, SECONDS * 1000, rss1);

  step(`phase 2: ${CONNS} pre-auth TCP connections + ${TUNNEL} tunnel first requests, ${SECONDS} s`);
  let attack = { open: 0, opened: 0, closed: 0, bytes: 0 };
  const maxOpen = { v: 0 };
  const att = await startChild(
    join(__dirname, 'lib/preauth-attacker.js'),
    [String(col.value.agents), String(col.value.http), String(CONNS), String(TUNNEL)],
    {},
    (o) => (typeof o.open === 'number' ? o : undefined),
    'attacker',
  );
  att.child.onLine = (o) => {
    attack = o;
    maxOpen.v = Math.max(maxOpen.v, o.open);
  };
  const rss2 = rssSampler(pid);
  const second = openSession(col.value.agents, key, 'honest-2').then(
    (s) => ({ ms: s.ms, s }),
    (err) => ({ ms: Number.NaN, error: String(err.message) }),
  );
  const underAttack = await ackLatencies(agent, SECONDS * 1000, rss2);
  const joined = await second;
  att.child.kill('SIGKILL');
  children.delete(att.child);
  const stats = await (await fetch(`http://127.0.0.1:${col.value.http}/api/stats`)).json();
  if (joined.s) joined.s.s.close('bench done', null);
  agent.s.close('bench done', null);

  const row = (name, r, rss) => [
    name,
    num(r.lat.length),
    num(quantile(r.lat, 0.5), 2),
    num(quantile(r.lat, 0.99), 2),
    num(Math.max(...r.lat), 1),
    num(r.unacked),
    r.lost ?? '—',
    `${num(rss.min, 0)}–${num(rss.max, 0)}`,
  ];
  process.stdout.write(
    `${table(
      ['phase', 'acks', 'ack p50 ms', 'ack p99 ms', 'ack max ms', 'unacked', 'session lost', 'collector RSS MB'],
      [row('no attack', calm, rss1), row(`${CONNS} conns + ${TUNNEL} tunnel reqs`, underAttack, rss2)],
    )}\n\n`,
  );
  process.stdout.write(
    `second honest agent under attack: connect → active ${Number.isNaN(joined.ms) ? `failed (${joined.error})` : `${num(joined.ms, 1)} ms`}\n` +
      `attacker: ${num(attack.opened)} connections/requests opened, ${num(attack.closed)} closed by the collector, at most ${num(maxOpen.v)} open at once, ${num(attack.bytes / 1e6, 1)} MB sent\n` +
      `collector rejected: ${JSON.stringify(stats.rejected)}\n`,
  );
  process.stdout.write(
    `${JSON.stringify({
      bench: 'preauth',
      collector: COLLECTOR_CLI,
      seconds: SECONDS,
      conns: CONNS,
      tunnel: TUNNEL,
      handshakeTimeoutMs: OTHER_CLI === undefined ? HANDSHAKE_TIMEOUT : null,
      rssBeforeMb: rssBefore,
      calm: { acks: calm.lat.length, p50: quantile(calm.lat, 0.5), p99: quantile(calm.lat, 0.99), rssMaxMb: rss1.max },
      attack: {
        acks: underAttack.lat.length,
        p50: quantile(underAttack.lat, 0.5),
        p99: quantile(underAttack.lat, 0.99),
        unacked: underAttack.unacked,
        lost: underAttack.lost,
        rssMaxMb: rss2.max,
        secondAgentActiveMs: joined.ms,
        attacker: { ...attack, maxOpen: maxOpen.v },
      },
      rejected: stats.rejected,
    })}\n`,
  );
}

main().then(
  () => {
    cleanup();
    process.exit(0);
  },
  (err) => {
    process.stderr.write(`bench/preauth: ${err.stack ?? err}\n`);
    cleanup();
    process.exit(1);
  },
);
