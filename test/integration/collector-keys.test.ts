import assert from 'node:assert/strict';
import { chmodSync, chownSync, mkdirSync, statSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { FrameParser } from '@apm-sidecar/proto';
import { type AccessKey, ClientHandshake, UpstreamType, keyFingerprint, parseAccessKey } from '@apm-sidecar/proto/upstream';
import nacl from 'tweetnacl';
import { type CollectorProc, FAST_SIDECAR, createKey, getJson, runCollector, startCollector, tcpSidecar } from '../helpers/collector';
import { sleep, startSidecar, statusJson, tempDir, waitFor } from '../helpers/procs';

/**
 * The key lifecycle: a project has several keys (rotation), `keys list` shows
 * fingerprints only, `keys revoke` (another process) ends the key's sessions within a
 * second, and every failed proof gets one refusal (no oracle for projects or keys).
 */

type Json = Record<string, any>;

async function agentRow(c: CollectorProc, agentId: string): Promise<Json | undefined> {
  return (await getJson<Json[]>(c.httpPort, '/api/agents', c.httpHost)).body.find((a) => a.agentId === agentId);
}

/** Send a ClientHello made with `key`; resolve with the raw payload of the collector's clear-text refusal. */
async function refusal(port: number, key: AccessKey): Promise<Buffer> {
  const sock = tcpConnect({ host: '127.0.0.1', port });
  sock.on('error', () => {});
  let got: Buffer | null = null;
  const parser = new FrameParser(1 << 20, (type, payload) => {
    if (type === UpstreamType.HandshakeRejected) got = Buffer.from(payload);
  });
  sock.on('data', (d) => parser.push(d));
  await new Promise((r) => sock.once('connect', r));
  sock.write(new ClientHandshake(nacl, key, 'prober').hello());
  try {
    return await waitFor('the clear-text refusal', () => got);
  } finally {
    sock.destroy();
  }
}

describe('collector: access key lifecycle', () => {
  const tmp = tempDir('apm-keys-');
  const cleanups: (() => Promise<unknown> | undefined)[] = [];
  after(async () => {
    for (const f of cleanups.reverse()) await f();
    tmp.cleanup();
  });

  test('rotation: keys create on an existing project adds a key, both work; keys revoke (another process) ends that key’s session within a second and its next handshake is refused', async (t) => {
    const data = join(tmp.dir, 'rotate');
    const oldKey = await createKey(data, 'shop');
    const rotated = await runCollector(['keys', 'create', '--project', 'shop', '--data-dir', data]);
    assert.equal(rotated.code, 0, rotated.stderr);
    const newKey = rotated.stdout.trimEnd().split('\n').at(-1) as string;
    const o = parseAccessKey(oldKey);
    const n = parseAccessKey(newKey);
    assert.equal(n.projectId, o.projectId, 'the same project');
    assert.notDeepEqual(n.secret, o.secret, 'a new secret');
    assert.match(rotated.stdout, /added access key/);

    const list = await runCollector(['keys', 'list', '--json', '--data-dir', data]);
    assert.equal(list.code, 0, list.stderr);
    const rows = JSON.parse(list.stdout) as Json[];
    assert.deepEqual(
      rows.map((r) => [r.projectId, r.fingerprint, r.revokedAt]),
      [
        [o.projectId, keyFingerprint(o.secret), null],
        [o.projectId, keyFingerprint(n.secret), null],
      ],
    );
    const table = await runCollector(['keys', 'list', '--data-dir', data]);
    for (const out of [list.stdout, table.stdout]) {
      for (const k of [o, n]) {
        assert.ok(!out.includes(k.secret.toString('base64url')) && !out.includes(k.secret.toString('hex')), 'never a secret');
        assert.ok(out.includes(keyFingerprint(k.secret)), 'the fingerprint');
      }
    }

    const c = await startCollector(data);
    cleanups.push(() => c.kill('SIGKILL'));
    const onOld = await tcpSidecar(join(tmp.dir, 'old'), c, oldKey, 'on-old-key');
    cleanups.push(() => onOld.kill('SIGKILL'));
    const onNew = await tcpSidecar(join(tmp.dir, 'new'), c, newKey, 'on-new-key');
    cleanups.push(() => onNew.kill('SIGKILL'));
    await waitFor(
      'both sidecars active',
      async () => (await statusJson(onOld.socket)).state === 'active' && (await statusJson(onNew.socket)).state === 'active',
    );
    const badKeyBefore = (await getJson(c.httpPort, '/api/stats')).body.rejected.badKey as number;

    const revoke = await runCollector(['keys', 'revoke', '--fingerprint', keyFingerprint(o.secret), '--data-dir', data]);
    const revokedAt = Date.now();
    assert.equal(revoke.code, 0, revoke.stderr);
    assert.match(revoke.stdout, /revoked access key/);
    await waitFor('the old key’s session to end', async () => (await agentRow(c, 'on-old-key'))?.state === 'disconnected', 5000, 10);
    const endedIn = Date.now() - revokedAt;
    t.diagnostic(`session ended ${endedIn} ms after keys revoke exited`);
    assert.ok(endedIn < 1000, `the session ended ${endedIn} ms after the revocation`);
    assert.ok(
      onOld.lines.some((l) => l.code === 'ERR_KEY_REVOKED'),
      'the sidecar was told why',
    );

    // Its reconnections are refused like any failed proof; the other key's session goes on.
    await waitFor('the old key to be refused', async () => (await statusJson(onOld.socket)).upstream.lastError?.code === 'ERR_BAD_KEY');
    // Several of its retries, counted rather than waited for: each one refused, none let back in.
    await waitFor('three refused reconnections', async () => (await getJson(c.httpPort, '/api/stats')).body.rejected.badKey >= badKeyBefore + 3);
    assert.notEqual((await statusJson(onOld.socket)).state, 'active');
    const s = await statusJson(onNew.socket);
    assert.equal(s.state, 'active');
    assert.equal(s.upstream.sessions, 1, 'the new key’s session was not touched');
    assert.equal((await agentRow(c, 'on-new-key'))?.state, 'live');
    assert.ok((await getJson(c.httpPort, '/api/stats')).body.rejected.badKey > badKeyBefore, 'counted as rejected.badKey');
    const after = JSON.parse((await runCollector(['keys', 'list', '--json', '--data-dir', data])).stdout) as Json[];
    assert.ok(!Number.isNaN(Date.parse(after[0]?.revokedAt)), 'listed as revoked');
    assert.equal(after[1]?.revokedAt, null);

    const unknown = await runCollector(['keys', 'revoke', '--fingerprint', 'ffffffffffff', '--data-dir', data]);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /ERR_KEY_NOT_FOUND/);
  });

  test('over the HTTP tunnel too: keys revoke ends the key’s session within a second', async (t) => {
    const data = join(tmp.dir, 'tunnel');
    const keyText = await createKey(data, 'tunnel');
    const c = await startCollector(data);
    cleanups.push(() => c.kill('SIGKILL'));
    const sc = await startSidecar(
      join(tmp.dir, 'tunnel-sc'),
      ['--transport', 'http', '--server-host', '127.0.0.1', '--server-port', String(c.httpPort), '--set', 'agent_id=tunnel-agent', ...FAST_SIDECAR],
      { APM_SIDECAR_ACCESS_KEY: keyText },
    );
    cleanups.push(() => sc.kill('SIGKILL'));
    await waitFor('the tunnel sidecar active', async () => (await statusJson(sc.socket)).state === 'active');
    assert.equal((await agentRow(c, 'tunnel-agent'))?.state, 'live');
    const revoke = await runCollector(['keys', 'revoke', '--fingerprint', keyFingerprint(parseAccessKey(keyText).secret), '--data-dir', data]);
    const revokedAt = Date.now();
    assert.equal(revoke.code, 0, revoke.stderr);
    await waitFor('the tunnel session to end', async () => (await agentRow(c, 'tunnel-agent'))?.state === 'disconnected', 5000, 10);
    const endedIn = Date.now() - revokedAt;
    t.diagnostic(`tunnel session ended ${endedIn} ms after keys revoke exited`);
    assert.ok(endedIn < 1000, `the session ended ${endedIn} ms after the revocation`);
    await waitFor('the sidecar refused on its next handshake', async () => (await statusJson(sc.socket)).upstream.lastError?.code === 'ERR_BAD_KEY');
  });

  test('one refusal for every failed proof: unknown project, wrong key and revoked key get the same code and message, each counted as rejected.badKey', async () => {
    const data = join(tmp.dir, 'oracle');
    const revokedText = await createKey(data, 'bank');
    const validText = await createKey(data, 'bank');
    const revokedKey = parseAccessKey(revokedText);
    const c = await startCollector(data);
    cleanups.push(() => c.kill('SIGKILL'));
    const before = (await getJson(c.httpPort, '/api/stats')).body.rejected.badKey as number;
    const project = parseAccessKey(validText).projectId;
    // Pre-auth refusals are logged at most once a second per code: space the three attempts so
    // each one's reason reaches the log.
    const unknownProject = await refusal(c.port, { projectId: 'no-such-project', secret: Buffer.alloc(32, 9) });
    await sleep(1100);
    const wrongKey = await refusal(c.port, { projectId: project, secret: Buffer.alloc(32, 9) });
    await sleep(1100);
    assert.deepEqual(JSON.parse(unknownProject.toString()), { code: 'ERR_BAD_KEY', message: 'access key refused' });
    assert.deepEqual(wrongKey, unknownProject, 'a wrong key is refused byte for byte like an unknown project');
    // Revoked while the collector runs: the very next handshake is refused, the same way.
    assert.equal((await runCollector(['keys', 'revoke', '--fingerprint', keyFingerprint(revokedKey.secret), '--data-dir', data])).code, 0);
    const revoked = await refusal(c.port, revokedKey);
    assert.deepEqual(revoked, unknownProject, 'and so is a revoked key');
    assert.equal((await getJson(c.httpPort, '/api/stats')).body.rejected.badKey, before + 3);
    // The operator's log still says which it was.
    const reasons = (await waitFor('three logged refusals', () => {
      const r = c.lines.filter((l) => l.code === 'ERR_BAD_KEY').map((l) => String(l.msg));
      return r.length >= 3 ? r : null;
    })) as string[];
    assert.equal(reasons.length, 3);
    assert.match(reasons[0] as string, /unknown project/);
    assert.match(reasons[1] as string, /no access key .* matches/);
    assert.match(reasons[2] as string, /revoked/);
  });

  test('an existing data directory open to others is tightened to 0700 (and logged); a shared (sticky) or another user’s one is refused', async () => {
    // As root, the way an operator might have made it.
    const wide = join(tmp.dir, 'wide');
    mkdirSync(wide);
    chmodSync(wide, 0o777);
    const c = await startCollector(wide);
    cleanups.push(() => c.kill('SIGKILL'));
    assert.equal(statSync(wide).mode & 0o7777, 0o700);
    const logged = c.lines.find((l) => typeof l.msg === 'string' && l.msg.includes('tightened to 0700'));
    assert.equal(logged?.mode, '0777');

    const group = join(tmp.dir, 'group');
    mkdirSync(group);
    chmodSync(group, 0o750);
    const r = await runCollector(['keys', 'list', '--data-dir', group]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /had mode 0750; tightened to 0700/);
    assert.equal(statSync(group).mode & 0o7777, 0o700);

    const sticky = join(tmp.dir, 'sticky');
    mkdirSync(sticky);
    chmodSync(sticky, 0o1777);
    const refused = await runCollector(['keys', 'list', '--data-dir', sticky]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /ERR_DATA_DIR_MODE/);
    assert.equal(statSync(sticky).mode & 0o7777, 0o1777, 'left as it was');

    const theirs = join(tmp.dir, 'theirs');
    mkdirSync(theirs);
    chownSync(theirs, 65534, 65534);
    chmodSync(theirs, 0o777);
    const notOurs = await runCollector(['keys', 'list', '--data-dir', theirs]);
    assert.equal(notOurs.code, 1);
    assert.match(notOurs.stderr, /belongs to uid 65534.*\[ERR_DATA_DIR_MODE\]/);
    assert.equal(statSync(theirs).mode & 0o7777, 0o777, 'left as it was');

    // Its owner (unprivileged) running the collector gets it tightened.
    chmodSync(tmp.dir, 0o711);
    const own = await runCollector(['keys', 'create', '--project', 'nobody', '--data-dir', theirs], { asUser: 'nobody' });
    assert.equal(own.code, 0, own.stderr);
    assert.match(own.stderr, /had mode 0777; tightened to 0700/);
    assert.equal(statSync(theirs).mode & 0o7777, 0o700);
    assert.equal(statSync(join(theirs, 'collector.db')).uid, 65534);
  });
});
