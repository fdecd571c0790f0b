import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { parseAccessKey } from '@apm-sidecar/proto/upstream';
import { type ApmClient, connect } from '@apm-sidecar/shim';
import { type CollectorProc, createKey, getJson, startCollector, tcpSidecar } from '../helpers/collector';
import { type SidecarProc, sleep, statusJson, tempDir, waitFor } from '../helpers/procs';

/**
 * An agent's identity is (project, agent_id): a sidecar holding project A's key
 * that calls itself like project B's agent is a different agent. It must not
 * replace B's session, share B's series or take B's license. The sidecars reconnect
 * after 200 ms (FAST_SIDECAR): were one session to replace the other, both would keep
 * fighting for the name (the behaviour this file guards against) instead of waiting a minute.
 */

type Json = Record<string, any>;

async function api<T = Json[]>(c: CollectorProc, path: string): Promise<T> {
  const r = await getJson<T>(c.httpPort, path, c.httpHost);
  assert.equal(r.status, 200, `${path}: ${JSON.stringify(r.body)}`);
  return r.body;
}

async function sums(c: CollectorProc, query: string): Promise<{ count: number; sum: number; projects: string[] }> {
  const rows = await api(c, `/api/metrics?${query}`);
  return {
    count: rows.reduce((a, p) => a + p.count, 0),
    sum: rows.reduce((a, p) => a + p.sum, 0),
    projects: [...new Set(rows.map((p) => p.project as string))].sort(),
  };
}

function replaced(sc: SidecarProc): Json[] {
  return sc.lines.filter((l) => l.code === 'ERR_REPLACED');
}

describe('collector: an agent is (project, agent_id)', () => {
  const tmp = tempDir();
  const cleanups: (() => Promise<unknown> | undefined)[] = [];
  after(async () => {
    for (const f of cleanups.reverse()) await f();
    tmp.cleanup();
  });

  test('two projects’ sidecars with the same agent_id both deliver: no ERR_REPLACED, two agent rows, each licensed, separate exact series', async () => {
    const data = join(tmp.dir, 'both');
    const keyA = await createKey(data, 'alpha');
    const keyB = await createKey(data, 'beta');
    const projA = parseAccessKey(keyA).projectId;
    const projB = parseAccessKey(keyB).projectId;
    const c = await startCollector(data, ['--licenses', '2']);
    cleanups.push(() => c.kill('SIGKILL'));
    const victim = await tcpSidecar(join(tmp.dir, 'victim'), c, keyB, 'victim');
    cleanups.push(() => victim.kill('SIGKILL'));
    const apmB: ApmClient = connect({ app: 'shop', socket: victim.socket, flushMs: 50 });
    cleanups.push(() => apmB.close());
    await waitFor('the victim to be active', async () => (await statusJson(victim.socket)).state === 'active');
    const intruder = await tcpSidecar(join(tmp.dir, 'intruder'), c, keyA, 'victim');
    cleanups.push(() => intruder.kill('SIGKILL'));
    const apmA: ApmClient = connect({ app: 'other', socket: intruder.socket, flushMs: 50 });
    cleanups.push(() => apmA.close());
    await waitFor('the intruder to be active', async () => (await statusJson(intruder.socket)).state === 'active');

    // Both deliver for a while, in many flushes, so that any replacement would show.
    const ordersB = apmB.counter('orders', { region: 'eu' });
    const ordersA = apmA.counter('orders', { region: 'eu' });
    for (let round = 0; round < 20; round++) {
      for (let i = 0; i < 74; i++) ordersB.add(1000);
      for (let i = 0; i < 128; i++) ordersA.add(1);
      await sleep(75);
    }
    for (let i = 0; i < 3; i++) ordersB.add(1000); // 1483 × 1000
    for (let i = 0; i < 7; i++) ordersA.add(1); // 2567 × 1
    apmB.event({ type: 'deploy', message: 'beta-v1' });
    apmA.event({ type: 'deploy', message: 'alpha-v1' });
    assert.equal(await apmB.flush(), true);
    assert.equal(await apmA.flush(), true);

    const b = await waitFor('project B’s series complete', async () => {
      const s = await sums(c, `project=${projB}&agent=victim&name=orders`);
      return s.count >= 1483 ? s : null;
    });
    const a = await waitFor('project A’s series complete', async () => {
      const s = await sums(c, `project=${projA}&agent=victim&name=orders`);
      return s.count >= 2567 ? s : null;
    });
    // A barrier instead of a wait: a marker recorded after everything else is stored only after every
    // earlier pack of its session (one session each, asserted below), so anything late or counted
    // twice has landed by the time both markers are stored.
    apmB.counter('marker').add(1);
    apmA.counter('marker').add(1);
    assert.equal(await apmB.flush(), true);
    assert.equal(await apmA.flush(), true);
    await waitFor('both markers stored', async () => {
      const [mb, ma] = [await sums(c, `project=${projB}&agent=victim&name=marker`), await sums(c, `project=${projA}&agent=victim&name=marker`)];
      return mb.count === 1 && ma.count === 1;
    });
    assert.deepEqual(await sums(c, `project=${projB}&agent=victim&name=orders`), { count: 1483, sum: 1_483_000, projects: [projB] });
    assert.deepEqual(await sums(c, `project=${projA}&agent=victim&name=orders`), { count: 2567, sum: 2567, projects: [projA] });
    assert.equal(b.sum, 1_483_000);
    assert.equal(a.sum, 2567);
    // Unfiltered, the rows of both are listed, each under its own project.
    assert.deepEqual(await sums(c, 'agent=victim&name=orders'), { count: 1483 + 2567, sum: 1_485_567, projects: [projA, projB].sort() });

    assert.deepEqual(replaced(victim), [], 'the victim was never replaced');
    assert.deepEqual(replaced(intruder), [], 'nor the intruder');
    assert.equal((await statusJson(victim.socket)).upstream.sessions, 1, 'the victim kept its one session');
    assert.equal((await statusJson(intruder.socket)).upstream.sessions, 1);

    const agents = (await api(c, '/api/agents')).filter((r) => r.agentId === 'victim');
    assert.deepEqual(agents.map((r) => [r.project, r.state, r.licensed]).sort(), [
      [projA, 'live', true],
      [projB, 'live', true],
    ]);
    assert.deepEqual(
      (await api(c, `/api/agents?project=${projB}`)).map((r) => [r.project, r.agentId, r.app]),
      [[projB, 'victim', 'shop']],
    );
    const events = await waitFor('both events', async () => {
      const e = await api(c, `/api/events?agent=victim&project=${projA}`);
      return e.length === 1 ? e : null;
    });
    assert.deepEqual(
      events.map((e) => [e.project, e.message]),
      [[projA, 'alpha-v1']],
    );
    assert.deepEqual(
      (await api(c, `/api/events?project=${projB}`)).map((e) => [e.project, e.message]),
      [[projB, 'beta-v1']],
    );
  });

  test('with one license, another project’s sidecar using the same agent_id cannot take it: it is refused, the holder stays live and licensed', async () => {
    const data = join(tmp.dir, 'seat');
    const keyA = await createKey(data, 'alpha');
    const keyB = await createKey(data, 'beta');
    const projA = parseAccessKey(keyA).projectId;
    const projB = parseAccessKey(keyB).projectId;
    const c = await startCollector(data, ['--licenses', '1']);
    cleanups.push(() => c.kill('SIGKILL'));
    const victim = await tcpSidecar(join(tmp.dir, 'seat-victim'), c, keyB, 'victim');
    cleanups.push(() => victim.kill('SIGKILL'));
    await waitFor('the victim to be active', async () => (await statusJson(victim.socket)).state === 'active');
    const intruder = await tcpSidecar(join(tmp.dir, 'seat-intruder'), c, keyA, 'victim');
    cleanups.push(() => intruder.kill('SIGKILL'));
    await waitFor('the intruder to be refused a license', async () => (await statusJson(intruder.socket)).upstream.lastError?.code === 'ERR_NO_LICENSE');
    // A few of its retries, counted rather than waited for (each is a full handshake, refused a license).
    await waitFor(
      'three refusals of the intruder',
      () => c.lines.filter((l) => l.msg === 'agent refused: no license available' && l.projectId === projA).length >= 3,
    );
    const v = await statusJson(victim.socket);
    assert.equal(v.state, 'active');
    assert.equal(v.upstream.sessions, 1);
    assert.deepEqual(replaced(victim), []);
    assert.notEqual((await statusJson(intruder.socket)).state, 'active');
    const rows = (await api(c, '/api/agents')).filter((r) => r.agentId === 'victim');
    assert.deepEqual(rows.map((r) => [r.project, r.state, r.licensed]).sort(), [
      [projA, 'disconnected', false],
      [projB, 'live', true],
    ]);
  });
});
