// Length fields 0, 1, 2^31 − 1 and 2^32 − 1 on every length-prefixed path into a live process: the
// sidecar's IPC socket, the collector's agent port before and after authentication, and the HTTP
// tunnel (first request and an authenticated session). Each must end in a typed error and a closed
// connection (or a refused request), counted, with the process serving and its memory flat.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { type Socket, connect, createServer } from 'node:net';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FrameParser, MessageType, decodeError } from '@apm-sidecar/proto';
import { type AccessKey, UpstreamType, formatAccessKey, parseAccessKey } from '@apm-sidecar/proto/upstream';
import { type CollectorProc, createKey, getJson, startCollector } from '../helpers/collector';
import { byLevel, recordFigures, rssMb } from '../helpers/figures';
import { HostilePeer } from '../helpers/ipc-peer';
import { type SidecarProc, startSidecar, statusJson, tempDir, waitFor } from '../helpers/procs';
import { httpRequest } from '../helpers/raw-http';
import { ManualTunnel, RawAgent } from '../helpers/raw-agent';

const FILE = 'faults/input-length-fields';
const LENGTHS = [0, 1, 2 ** 31 - 1, 2 ** 32 - 1];
/**
 * RSS bounds (MiB) for the whole case, sampled before and after: a refused frame must leave nothing
 * behind, and a declared length must never be allocated (2^31 − 1 bytes would be 2 GiB). Bounded
 * rather than compared with the start, since V8 grows its heap lazily under connection churn
 * (measured at 100 rounds: sidecar +4.5 MiB, collector +13 MiB, both under 80 MiB).
 */
const RSS_MAX_MB = { sidecar: 160, collector: 200 };

function header(len: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(len, 0);
  return b;
}
/** The declared length, then a type byte and a few payload bytes (fewer than declared, except for length 1). */
function frameWith(len: number, type: number): Buffer {
  if (len === 0) return header(0);
  if (len === 1) return Buffer.concat([header(1), Buffer.of(type)]);
  return Buffer.concat([header(len), Buffer.of(type), Buffer.alloc(64, 0x41)]);
}

const tmp = tempDir('apm-inlen-');
let sidecar: SidecarProc;
let collector: CollectorProc;
let key: AccessKey;

before(async () => {
  const data = join(tmp.dir, 'collector');
  const keyText = await createKey(data, 'lengths');
  key = parseAccessKey(keyText);
  [sidecar, collector] = await Promise.all([startSidecar(join(tmp.dir, 's')), startCollector(data)]);
});

after(async () => {
  await Promise.all([sidecar?.kill('SIGTERM'), collector?.kill('SIGTERM')]);
  tmp.cleanup();
});

/** Write `bytes` to the agent port and collect the clear-text refusal (HandshakeRejected) until the collector closes. */
function upstreamPreauth(bytes: Buffer): Promise<{ code: string | null; closed: boolean }> {
  return new Promise((resolve) => {
    const sock: Socket = connect({ host: '127.0.0.1', port: collector.port });
    let code: string | null = null;
    const parser = new FrameParser(1 << 20, (type, payload) => {
      if (type === UpstreamType.HandshakeRejected) code = (JSON.parse(payload.toString('utf8')) as { code: string }).code;
    });
    const giveUp = setTimeout(() => {
      sock.destroy();
      resolve({ code, closed: false });
    }, 15_000);
    sock.on('data', (d: Buffer) => parser.push(d));
    sock.on('error', () => undefined);
    sock.on('close', () => {
      clearTimeout(giveUp);
      resolve({ code, closed: true });
    });
    sock.on('connect', () => sock.write(bytes));
  });
}

async function ipc(bytes: Buffer): Promise<{ code: string | null; closed: boolean }> {
  const peer = new HostilePeer(sidecar.socket);
  await peer.ready;
  peer.socket.write(bytes);
  const closed = await Promise.race([peer.closedAt.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 15_000))]);
  if (!closed) peer.socket.destroy();
  const errs = peer.of(MessageType.Error).map((f) => decodeError(f.payload));
  return { code: errs[0]?.code ?? null, closed };
}

/** An authenticated agent (TCP or tunnel) that then sends the bad length: the collector's sealed error code, and whether the session ended. */
async function upstreamAuthed(len: number, tunnel: boolean): Promise<{ code: string | null; closed: boolean; status?: number }> {
  const tun = tunnel ? new ManualTunnel(collector.httpPort) : undefined;
  const agent = new RawAgent(collector.port, key, `len-${len}-${tunnel ? 'http' : 'tcp'}`, tun);
  if (tun !== undefined) {
    await new Promise((res) => tun.once('connect', res));
    await tun.post(); // ClientHello → ServerHello
    await tun.post(); // ClientFinished, AgentInfo → config, license
  }
  await waitFor('the license', () => agent.license !== null, 15_000);
  agent.sock.write(frameWith(len, UpstreamType.Text));
  if (tun !== undefined) {
    const status = await tun.post();
    // The session lingers for its error to be fetched (TunnelWire.end: 2 s), then is gone: 410.
    const closed = await waitFor('the tunnel session to end', async () => (await tun.post()) === 410, 10_000, 250).catch(() => false);
    agent.destroy();
    return { code: agent.errors[0]?.code ?? null, closed, status };
  }
  const closed = await waitFor('the session to end', () => agent.closed, 15_000).catch(() => false);
  agent.destroy();
  return { code: agent.errors[0]?.code ?? null, closed };
}

describe('input attacks: length fields', () => {
  it('a collector answering with length fields 0, 1, 2^31 − 1 and 2^32 − 1 makes the sidecar end each session with a typed error, counted, and reconnect, memory bounded', async () => {
    const perLength = byLevel(5, 25, 250);
    // A hostile collector: every connection is answered with the next bad length (after a type byte for 1).
    let accepted = 0;
    let closedBySidecar = 0;
    const server = createServer((sock) => {
      const len = LENGTHS[accepted++ % LENGTHS.length] as number;
      sock.on('error', () => undefined);
      // Read (and drop) what the sidecar sends, so its close is seen.
      sock.resume();
      sock.on('close', () => closedBySidecar++);
      sock.write(frameWith(len, UpstreamType.ServerHello));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    const sc = await startSidecar(
      join(tmp.dir, 'hostile'),
      ['--transport', 'tcp', '--server-host', '127.0.0.1', '--server-port', String(port), '--set', 'reconnect_schedule=20', '--set', 'agent_id=len-victim'],
      { APM_SIDECAR_ACCESS_KEY: formatAccessKey({ projectId: 'lengths', secret: randomBytes(32) }) },
    );
    try {
      const want = perLength * LENGTHS.length;
      await waitFor('the sessions to end', () => closedBySidecar >= want, 60_000, 50);
      const st = await statusJson(sc.socket);
      const errors = st.upstream.sessionErrors as Record<string, number>;
      const rss = rssMb(sc.pid);
      const fdCount = readdirSync(`/proc/${sc.pid}/fd`).length;
      recordFigures(FILE, {
        case: 'input/length-fields-from-collector',
        section: 'input',
        load: 'none',
        fault: `a fake collector answering each connection with length 0, 1, 2^31−1 or 2^32−1 in turn, ${perLength} times each`,
        lost: 0,
        duplicated: 0,
        maxRssMb: { sidecar: rss },
        recoverMs: null,
        extra: { connections: accepted, closedBySidecar, sidecarFds: fdCount, sessionErrors: JSON.stringify(errors) },
      });
      assert.ok(sc.alive, 'the sidecar is up');
      assert.ok((errors.ERR_FRAME_EMPTY ?? 0) >= perLength - 1, `length 0: ${JSON.stringify(errors)}`);
      assert.ok((errors.ERR_FRAME_TOO_LARGE ?? 0) >= 2 * perLength - 2, `2^31−1 and 2^32−1: ${JSON.stringify(errors)}`);
      assert.ok((errors.ERR_HANDSHAKE ?? 0) >= perLength - 1, `length 1 (an empty ServerHello): ${JSON.stringify(errors)}`);
      assert.ok(rss <= RSS_MAX_MB.sidecar, `sidecar RSS ${rss} MiB`);
      assert.ok(fdCount <= 40, `the sidecar holds ${fdCount} descriptors after ${accepted} failed sessions`);
    } finally {
      await sc.kill('SIGTERM');
      server.close();
    }
  });

  it('length fields 0, 1, 2^31 − 1 and 2^32 − 1 on the IPC socket, the agent port (before and after the handshake) and the tunnel end in a typed error and a closed connection, counted, memory flat', async () => {
    const rounds = byLevel(10, 100, 1000);
    const rss0 = { sidecar: rssMb(sidecar.pid), collector: rssMb(collector.pid) };
    const seen: Record<string, Record<string, number>> = {};
    const note = (path: string, len: number, code: string | null) => {
      const k = `${path} ${len}`;
      seen[k] ??= {};
      const c = code ?? 'none';
      (seen[k] as Record<string, number>)[c] = ((seen[k] as Record<string, number>)[c] ?? 0) + 1;
    };
    const notClosed: string[] = [];
    for (let r = 0; r < rounds; r++) {
      await Promise.all(
        LENGTHS.flatMap((len) => [
          ipc(frameWith(len, MessageType.Hello)).then((x) => {
            note('ipc', len, x.code);
            if (!x.closed) notClosed.push(`ipc ${len}`);
          }),
          upstreamPreauth(frameWith(len, UpstreamType.ClientHello)).then((x) => {
            note('upstream-preauth', len, x.code);
            if (!x.closed) notClosed.push(`upstream-preauth ${len}`);
          }),
          httpRequest(collector.httpPort, { method: 'POST', path: '/agent/tunnel', body: frameWith(len, UpstreamType.ClientHello) }).then((x) => {
            note('tunnel-first', len, `${x.status}`);
          }),
        ]),
      );
    }
    // After the handshake: once per length and carrier (each is a full handshake).
    for (const len of LENGTHS) {
      for (const tunnel of [false, true]) {
        const x = await upstreamAuthed(len, tunnel);
        note(tunnel ? 'tunnel-session' : 'upstream-session', len, x.code ?? (x.status !== undefined ? `${x.status}` : null));
        if (!x.closed) notClosed.push(`${tunnel ? 'tunnel' : 'upstream'}-session ${len}`);
      }
    }
    const rss1 = { sidecar: rssMb(sidecar.pid), collector: rssMb(collector.pid) };
    const st = await statusJson(sidecar.socket);
    const stats = (await getJson(collector.httpPort, '/api/stats')).body;
    recordFigures(FILE, {
      case: 'input/length-fields',
      section: 'input',
      load: 'none',
      fault: `lengths 0, 1, 2^31−1, 2^32−1 × ${rounds} rounds on IPC, agent port pre-auth and tunnel first request; once each on an authenticated TCP and tunnel session`,
      lost: 0,
      duplicated: 0,
      maxRssMb: { sidecar: Math.max(rss0.sidecar, rss1.sidecar), collector: Math.max(rss0.collector, rss1.collector) },
      recoverMs: null,
      extra: {
        connections: rounds * LENGTHS.length * 3 + LENGTHS.length * 2,
        rssGrowthSidecarMb: Math.round((rss1.sidecar - rss0.sidecar) * 10) / 10,
        rssGrowthCollectorMb: Math.round((rss1.collector - rss0.collector) * 10) / 10,
        codes: JSON.stringify(seen),
        ipcErrors: JSON.stringify(st.counters.ipcErrors),
        collectorRejected: JSON.stringify(stats.rejected),
      },
    });
    assert.deepEqual(notClosed, [], 'every connection was closed by the server');
    const expectCode = (path: string, len: number, allowed: string[]) => {
      const codes = Object.keys(seen[`${path} ${len}`] ?? {});
      assert.ok(codes.length > 0 && codes.every((c) => allowed.includes(c)), `${path} length ${len}: ${codes.join(', ')} (allowed ${allowed.join(', ')})`);
    };
    expectCode('ipc', 0, ['ERR_FRAME_EMPTY']);
    expectCode('ipc', 1, ['ERR_MALFORMED_MESSAGE']);
    expectCode('ipc', 2 ** 31 - 1, ['ERR_FRAME_TOO_LARGE']);
    expectCode('ipc', 2 ** 32 - 1, ['ERR_FRAME_TOO_LARGE']);
    expectCode('upstream-preauth', 0, ['ERR_FRAME_EMPTY', 'ERR_MALFORMED_MESSAGE']);
    expectCode('upstream-preauth', 1, ['ERR_HANDSHAKE']);
    expectCode('upstream-preauth', 2 ** 31 - 1, ['ERR_FRAME_TOO_LARGE']);
    expectCode('upstream-preauth', 2 ** 32 - 1, ['ERR_FRAME_TOO_LARGE']);
    for (const len of LENGTHS) {
      // The tunnel's first request answers 200 with the refusal frame (or 413 for a body over the pre-auth limit): never 5xx.
      for (const c of Object.keys(seen[`tunnel-first ${len}`] ?? {})) assert.ok(Number(c) < 500, `tunnel first request, length ${len}: ${c}`);
    }
    expectCode('upstream-session', 0, ['ERR_FRAME_EMPTY']);
    expectCode('upstream-session', 1, ['ERR_MALFORMED_MESSAGE']);
    expectCode('upstream-session', 2 ** 31 - 1, ['ERR_FRAME_TOO_LARGE']);
    expectCode('upstream-session', 2 ** 32 - 1, ['ERR_FRAME_TOO_LARGE']);
    for (const len of LENGTHS) expectCode('tunnel-session', len, ['ERR_FRAME_EMPTY', 'ERR_MALFORMED_MESSAGE', 'ERR_FRAME_TOO_LARGE']);
    assert.ok((st.counters.ipcErrors.ERR_FRAME_TOO_LARGE ?? 0) >= rounds * 2, 'IPC refusals counted');
    assert.ok(stats.rejected.tooLarge >= rounds * 2, 'agent-port refusals counted');
    assert.ok(sidecar.alive && collector.alive);
    assert.ok(rss1.sidecar <= RSS_MAX_MB.sidecar, `sidecar RSS ${rss0.sidecar} → ${rss1.sidecar} MiB`);
    assert.ok(rss1.collector <= RSS_MAX_MB.collector, `collector RSS ${rss0.collector} → ${rss1.collector} MiB`);
  });
});
