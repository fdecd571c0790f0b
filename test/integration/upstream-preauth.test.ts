// Pre-authentication exhaustion (issue 8, case 2). Before an agent proves its key the collector
// accepts frames of at most 4 KiB, closes a connection not through the handshake within
// handshake_timeout_ms, and bounds connections (max_connections, max_connections_per_ip); a tunnel
// session exists only after an accepted ClientHello in a first body of at most 4 KiB. Every refusal
// is counted in /api/stats `rejected` and /metrics, and an honest agent still connects and delivers.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { type Socket, connect as tcpConnect } from 'node:net';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { ClientHandshake, UpstreamType } from '@apm-sidecar/proto/upstream';
import { connect } from '@apm-sidecar/shim';
import nacl from 'tweetnacl';
import { type CollectorProc, collectorPerSuite, counterSum, getJson } from '../helpers/collector';
import { type SidecarProc, sleep, startSidecar, statusJson, waitFor } from '../helpers/procs';

const FAST = ['--set', 'flush_ms=50', '--set', 'metric_interval_ms=200', '--set', 'tcp_connection_timeout=1000', '--set', 'reconnect_schedule=1x200'];
const TUNNEL = '/agent/tunnel';
const SESSION_HEADER = 'apm-tunnel-session';

async function rejected(c: CollectorProc): Promise<Record<string, number>> {
  return (await getJson(c.httpPort, '/api/stats')).body.rejected;
}

/** Resident set of a process, in MB (Linux). */
function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0) / 1024;
}

/** A frame header declaring `length` bytes of a ClientHello, the rest never (or slowly) sent. */
function header(length: number): Buffer {
  const h = Buffer.alloc(5);
  h.writeUInt32LE(length, 0);
  h[4] = UpstreamType.ClientHello;
  return h;
}

interface Attacker {
  sock: Socket;
  openedAt: number;
  closedAt: number | null;
}

function open(port: number, localAddress = '127.0.0.1'): Promise<Attacker> {
  return new Promise((resolve) => {
    const sock = tcpConnect({ host: '127.0.0.1', port, localAddress });
    const a: Attacker = { sock, openedAt: Date.now(), closedAt: null };
    sock.on('error', () => {});
    sock.on('close', () => {
      a.closedAt = Date.now();
    });
    sock.on('data', () => {});
    sock.once('connect', () => resolve(a));
  });
}

/** Trickle one byte a tick to each open attacker until stop() (a slow-loris on the frame body). */
function trickle(attackers: Attacker[], everyMs: number): () => void {
  const t = setInterval(() => {
    for (const a of attackers) if (a.closedAt === null && !a.sock.destroyed) a.sock.write(Buffer.of(0x41));
  }, everyMs);
  return () => clearInterval(t);
}

function honestSidecar(dir: string, transport: 'tcp' | 'http', port: number, key: string, agentId: string): Promise<SidecarProc> {
  return startSidecar(dir, ['--transport', transport, '--server-host', '127.0.0.1', '--server-port', String(port), ...FAST, '--set', `agent_id=${agentId}`], {
    APM_SIDECAR_ACCESS_KEY: key,
  });
}

/** An honest agent: its sidecar becomes active and what the app records arrives exactly. */
async function deliver(c: CollectorProc, sc: SidecarProc, name: string, n: number): Promise<void> {
  const apm = connect({ app: 'honest', socket: sc.socket, flushMs: 50 });
  try {
    await waitFor('the honest sidecar to be active', async () => (await statusJson(sc.socket)).state === 'active', 20000);
    const m = apm.counter(name);
    for (let i = 0; i < n; i++) m.add(1);
    assert.equal(await apm.flush(), true);
    await waitFor(`the honest agent's ${n} to be stored`, async () => (await counterSum(c, name)) === n, 20000);
  } finally {
    await apm.close();
  }
}

function post(port: number, body: Buffer | ((req: ReturnType<typeof request>) => void), headers: Record<string, string> = {}) {
  return new Promise<{ status: number; headers: Record<string, unknown>; body: Buffer }>((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, path: TUNNEL, method: 'POST', headers: { 'content-type': 'application/octet-stream', ...headers } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (d: Buffer) => chunks.push(d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    if (typeof body === 'function') body(req);
    else req.end(body);
  });
}

describe('pre-authentication limits on the agent port', () => {
  const TIMEOUT = 1500;
  let collector: CollectorProc;
  let key: string;
  const tmp = collectorPerSuite('preauth', ['--set', `handshake_timeout_ms=${TIMEOUT}`], (c, k) => {
    collector = c;
    key = k;
  });

  test('200 trickling pre-auth connections are closed after handshake_timeout_ms, 8 MiB declarations at once; RSS stays bounded; an honest sidecar delivers meanwhile', async (t) => {
    const base = await rejected(collector);
    const rss0 = rssMb(collector.child.pid as number);

    // Oversized: 50 connections each declare an 8 MiB frame and send 1 MiB of it at once.
    const big = await Promise.all(Array.from({ length: 50 }, () => open(collector.port)));
    const MiB = Buffer.alloc(1 << 20, 0x42);
    for (const a of big) {
      a.sock.write(header(8 << 20));
      a.sock.write(MiB);
    }
    // Slow-loris: 200 connections declare a 4000-byte ClientHello and send one byte every 100 ms.
    const slow = await Promise.all(Array.from({ length: 200 }, () => open(collector.port)));
    for (const a of slow) a.sock.write(header(4000));
    const stop = trickle(slow, 100);
    try {
      await waitFor('the 8 MiB declarations to be refused', () => big.every((a) => a.closedAt !== null), 10000);

      const sc = await honestSidecar(join(tmp.dir, 'honest-tcp'), 'tcp', collector.port, key, 'honest-tcp');
      try {
        await deliver(collector, sc, 'preauth.tcp', 250);
      } finally {
        await sc.kill('SIGTERM');
      }
      const rssPeak = rssMb(collector.child.pid as number);

      await waitFor('every slow-loris connection to be closed', () => slow.every((a) => a.closedAt !== null), TIMEOUT + 8000);
      for (const a of slow) {
        const held = (a.closedAt as number) - a.openedAt;
        assert.ok(held >= TIMEOUT - 100, `held ${held} ms, not before handshake_timeout_ms (${TIMEOUT})`);
        assert.ok(held <= TIMEOUT + 6000, `held ${held} ms: closed soon after handshake_timeout_ms`);
      }
      const after = await rejected(collector);
      assert.equal(after.handshakeTimeout - base.handshakeTimeout, 200, 'each timed-out handshake counted');
      assert.equal(after.tooLarge - base.tooLarge, 50, 'each oversized pre-auth frame counted');
      // Without the limits, the 50 × 1 MiB alone are held (and doubled by the parser's buffer growth).
      t.diagnostic(`collector RSS ${rss0.toFixed(1)} MB before, ${rssPeak.toFixed(1)} MB under the attack`);
      assert.ok(rssPeak - rss0 < 40, `collector RSS grew ${(rssPeak - rss0).toFixed(1)} MB under the attack (from ${rss0.toFixed(1)} MB)`);
      const metrics = await (await fetch(`http://${collector.httpHost}:${collector.httpPort}/metrics`)).text();
      assert.match(metrics, /apm_collector_rejected_total\{reason="handshakeTimeout"\} [1-9]/);
      assert.match(metrics, /apm_collector_rejected_total\{reason="tooLarge"\} [1-9]/);
    } finally {
      stop();
      for (const a of [...big, ...slow]) a.sock.destroy();
    }
  });

  test('a frame over 4 KiB before authentication is refused even under max_frame_bytes; an honest agent’s large frames still pass after it', async () => {
    const base = await rejected(collector);
    const a = await open(collector.port);
    a.sock.write(header(4097));
    await waitFor('the connection to be closed', () => a.closedAt !== null, 5000);
    assert.ok((a.closedAt as number) - a.openedAt < TIMEOUT, 'refused at the header, not by the timeout');
    assert.equal((await rejected(collector)).tooLarge, base.tooLarge + 1);
    assert.ok(
      collector.lines.some((l) => l.code === 'ERR_FRAME_TOO_LARGE'),
      'the collector logged the typed error',
    );

    // Authenticated, the normal max_frame_bytes applies: 40 events of 2 KiB go in frames far over 4 KiB.
    const sc = await honestSidecar(join(tmp.dir, 'honest-big'), 'tcp', collector.port, key, 'honest-big');
    const apm = connect({ app: 'big', socket: sc.socket, flushMs: 50 });
    try {
      await waitFor('the sidecar to be active', async () => (await statusJson(sc.socket)).state === 'active');
      const before = (await getJson(collector.httpPort, '/api/stats')).body;
      for (let i = 0; i < 40; i++) apm.event({ type: 'big', message: `${i}:${'x'.repeat(2048)}` });
      assert.equal(await apm.flush(), true);
      await waitFor(
        'the 40 events to be stored',
        async () => (await getJson(collector.httpPort, '/api/stats')).body.received.events - before.received.events === 40,
      );
      const st = await statusJson(sc.socket);
      assert.ok(st.upstream.bytesSent > 40 * 2048, 'the events crossed the wire');
      assert.equal((await rejected(collector)).tooLarge, base.tooLarge + 1, 'no authenticated frame refused');
    } finally {
      await apm.close();
      await sc.kill('SIGTERM');
    }
  });
});

describe('connection limits at accept', () => {
  let collector: CollectorProc;
  let key: string;
  const tmp = collectorPerSuite(
    'limits',
    ['--set', 'handshake_timeout_ms=3000', '--set', 'max_connections=30', '--set', 'max_connections_per_ip=20'],
    (c, k) => {
      collector = c;
      key = k;
    },
  );

  test('max_connections_per_ip and max_connections close the excess at accept, counted; the honest agent connects once the holders time out', async () => {
    const base = await rejected(collector);
    // 25 from 127.0.0.2: 20 held, 5 over the per-address limit.
    const fromA = await Promise.all(Array.from({ length: 25 }, () => open(collector.port, '127.0.0.2')));
    await waitFor('the per-address excess to be closed', () => fromA.filter((a) => a.closedAt !== null).length === 5, 5000);
    // 15 from 127.0.0.3: 10 more fit under max_connections (30), 5 do not.
    const fromB = await Promise.all(Array.from({ length: 15 }, () => open(collector.port, '127.0.0.3')));
    await waitFor('the excess over max_connections to be closed', () => fromB.filter((a) => a.closedAt !== null).length === 5, 5000);
    for (const a of [...fromA, ...fromB]) if (a.closedAt !== null) assert.ok(a.closedAt - a.openedAt < 1000, 'closed at accept');
    assert.equal((await rejected(collector)).tooManyConnections, base.tooManyConnections + 10);

    const sc = await honestSidecar(join(tmp.dir, 'honest'), 'tcp', collector.port, key, 'honest-limits');
    try {
      // Refused (told why, in clear text) while the holders hold; they time out after handshake_timeout_ms, then it gets in.
      await waitFor(
        'the honest sidecar to be told the limit is reached',
        async () => (await statusJson(sc.socket)).upstream.sessionErrors?.ERR_TOO_MANY_CONNECTIONS >= 1,
      );
      await deliver(collector, sc, 'limits.tcp', 40);
    } finally {
      await sc.kill('SIGTERM');
      for (const a of [...fromA, ...fromB]) a.sock.destroy();
    }
    const metrics = await (await fetch(`http://${collector.httpHost}:${collector.httpPort}/metrics`)).text();
    assert.match(metrics, /apm_collector_rejected_total\{reason="tooManyConnections"\} [1-9]/);
  });
});

describe('pre-authentication limits on the HTTP tunnel', () => {
  const TIMEOUT = 1500;
  let collector: CollectorProc;
  let key: string;
  const tmp = collectorPerSuite('tunnel', ['--set', `handshake_timeout_ms=${TIMEOUT}`], (c, k) => {
    collector = c;
    key = k;
  });

  test('a first tunnel body over 4 KiB is 413 and counted; a body that is no valid ClientHello creates no session', async () => {
    const base = await rejected(collector);
    const big = await post(collector.httpPort, Buffer.concat([header(8 << 20), Buffer.alloc(64 * 1024)]));
    assert.equal(big.status, 413);
    assert.equal(JSON.parse(big.body.toString()).error.code, 'ERR_FRAME_TOO_LARGE');
    assert.equal(big.headers[SESSION_HEADER], undefined);
    assert.equal((await rejected(collector)).tooLarge, base.tooLarge + 1);

    // A hello for a project that has no key: refused in clear text, and no session id is handed out.
    const hello = new ClientHandshake(nacl, { projectId: 'nosuchproject', secret: randomBytes(32) }, 'x').hello();
    const bad = await post(collector.httpPort, hello);
    assert.equal(bad.status, 200);
    assert.equal(bad.headers[SESSION_HEADER], undefined, 'no session for a refused hello');
    assert.equal(bad.body[4], UpstreamType.HandshakeRejected);
    // Garbage instead of a hello: the same.
    const junk = await post(collector.httpPort, Buffer.concat([header(5), Buffer.from('junk')]));
    assert.equal(junk.headers[SESSION_HEADER], undefined);
    assert.equal(junk.body[4], UpstreamType.HandshakeRejected);
  });

  test('50 first requests trickling their body are closed after handshake_timeout_ms (408, counted); an honest tunnel agent delivers meanwhile', async () => {
    const base = await rejected(collector);
    const rss0 = rssMb(collector.child.pid as number);
    const started = Date.now();
    const results: Promise<{ status: number; at: number }>[] = [];
    const timers: NodeJS.Timeout[] = [];
    for (let i = 0; i < 50; i++) {
      results.push(
        post(
          collector.httpPort,
          (req) => {
            req.write(header(4000));
            timers.push(
              setInterval(() => {
                if (!req.destroyed) req.write(Buffer.of(0x41));
              }, 100),
            );
          },
          { 'content-length': '4004' },
        ).then(
          (r) => ({ status: r.status, at: Date.now() }),
          () => ({ status: 0, at: Date.now() }),
        ),
      );
    }
    try {
      const sc = await honestSidecar(join(tmp.dir, 'honest-http'), 'http', collector.httpPort, key, 'honest-http');
      try {
        await deliver(collector, sc, 'preauth.http', 120);
      } finally {
        await sc.kill('SIGTERM');
      }
      const done = await Promise.all(results);
      for (const r of done) {
        assert.equal(r.status, 408);
        assert.ok(r.at - started >= TIMEOUT - 100 && r.at - started <= TIMEOUT + 6000, `answered after ${r.at - started} ms`);
      }
      assert.equal((await rejected(collector)).handshakeTimeout, base.handshakeTimeout + 50);
      assert.ok(rssMb(collector.child.pid as number) - rss0 < 40, 'collector RSS bounded');
    } finally {
      for (const t of timers) clearInterval(t);
    }
    await sleep(0);
  });
});
