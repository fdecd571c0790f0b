import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { type CollectorProc, getJson, runCollector, startCollector, tcpSidecar } from '../helpers/collector';
import { type PgServer, postgresMissing, startPostgres } from '../helpers/postgres';
import { type SidecarProc, statusJson, tempDir, waitFor } from '../helpers/procs';

/**
 * Two collectors on one PostgreSQL behave as one (DESIGN §11): the page and API of either list
 * the whole fleet, and the license pool is one, whichever collector an agent connects to.
 */

type AgentJson = { agentId: string; state: string; licensed: boolean };

describe('two collectors sharing one PostgreSQL', { skip: postgresMissing() }, () => {
  const tmp = tempDir('apm-pgfleet-');
  const cleanups: (() => Promise<unknown>)[] = [];
  let pg: PgServer | null = null;
  after(async () => {
    for (const f of cleanups.reverse()) await f().catch(() => {});
    await pg?.stop();
    tmp.cleanup();
  });

  test('three agents, --licenses 2: exactly two licensed across both collectors, the third licensed after one is released; B lists the agents of A', async () => {
    pg = await startPostgres();
    // The collectors (children) take the password from the environment, never from the URL.
    process.env.PGPASSWORD = pg.password;
    const url = await pg.createDatabase('fleet');
    const migrated = await runCollector(['migrate', '--store', url]);
    assert.equal(migrated.code, 0, migrated.stderr);
    const made = await runCollector(['keys', 'create', '--project', 'shop', '--store', url]);
    assert.equal(made.code, 0, made.stderr);
    const key = made.stdout.trimEnd().split('\n').at(-1) as string;

    const args = ['--store', url, '--licenses', '2', '--set', 'license_release_ms=300'];
    const a = await startCollector(join(tmp.dir, 'a'), args);
    cleanups.push(() => a.kill('SIGTERM'));
    const b = await startCollector(join(tmp.dir, 'b'), args);
    cleanups.push(() => b.kill('SIGTERM'));

    const sidecar = async (c: CollectorProc, id: string): Promise<SidecarProc> => {
      const s = await tcpSidecar(join(tmp.dir, id), c, key, id);
      cleanups.push(() => s.kill('SIGTERM'));
      return s;
    };
    const agents = async (c: CollectorProc): Promise<AgentJson[]> => (await getJson<AgentJson[]>(c.httpPort, '/api/agents', c.httpHost)).body;
    const active = async (s: SidecarProc) => (await statusJson(s.socket)).state === 'active';

    const a1 = await sidecar(a, 'on-a-1');
    await waitFor('on-a-1 active', () => active(a1), 15000);
    const b1 = await sidecar(b, 'on-b-1');
    await waitFor('on-b-1 active', () => active(b1), 15000);
    const a2 = await sidecar(a, 'on-a-2');
    const refused = await waitFor('the third agent to be refused a license', async () => {
      const st = await statusJson(a2.socket);
      return st.upstream.lastError?.code === 'ERR_NO_LICENSE' ? st : null;
    });
    assert.notEqual(refused.state, 'active');

    // Either collector's API shows the whole fleet, and the same pool.
    for (const c of [a, b]) {
      const rows = await waitFor('all three agents listed', async () => {
        const r = await agents(c);
        return r.length === 3 ? r : null;
      });
      // The refused agent is listed too, unlicensed (its session ends; it retries).
      assert.deepEqual(rows.map((r) => [r.agentId, r.licensed ? r.state : 'unlicensed']).sort(), [
        ['on-a-1', 'live'],
        ['on-a-2', 'unlicensed'],
        ['on-b-1', 'live'],
      ]);
    }

    // The agent on B goes; its license is freed after license_release_ms and the retrying agent on A takes it.
    await b1.kill('SIGKILL');
    await waitFor('on-a-2 to get the freed license', () => active(a2), 20000);
    const after = await agents(b);
    assert.deepEqual(
      after
        .filter((r) => r.licensed)
        .map((r) => r.agentId)
        .sort(),
      ['on-a-1', 'on-a-2'],
    );
    assert.equal(after.find((r) => r.agentId === 'on-b-1')?.state, 'disconnected');
  });
});
