import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Client } from 'pg';
import { postgresFor, postgresMissing, serverProcesses } from '../helpers/postgres';

/** Is the process running (a zombie, dead and waiting to be reaped, is not)? */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** The owner of a process, from /proc. */
function uidOf(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('Uid:'));
  return Number(line?.split(/\s+/)[1]);
}

describe('the PostgreSQL test harness', () => {
  it('starts a private server that takes the password from PGPASSWORD, and stop() leaves no process and no directory', async (t) => {
    const pg = await postgresFor(t);
    if (pg === null) return;
    assert.ok(alive(pg.pid));
    if (process.getuid?.() === 0) assert.notEqual(uidOf(pg.pid), 0, 'the server does not run as root');
    // Only its owner may reach the socket directory.
    assert.equal(statSync(pg.socketDir).mode & 0o077, 0);

    // The password comes from the environment (PGPASSWORD), as the collector's will.
    let procs: number[] = [];
    const saved = process.env.PGPASSWORD;
    process.env.PGPASSWORD = pg.env.PGPASSWORD;
    try {
      const c = new Client({ connectionString: pg.url });
      await c.connect();
      const r = await c.query<{ one: number; who: string }>('SELECT 1 AS one, current_user AS who');
      assert.deepEqual(r.rows, [{ one: 1, who: pg.user }]);
      // Several backends: stop() must take them all down, not only the postmaster.
      const c2 = new Client({ host: pg.socketDir, port: pg.port, user: pg.user, database: 'postgres' });
      await c2.connect();
      assert.equal((await c2.query<{ n: number }>('SELECT 2 AS n')).rows[0]?.n, 2);
      const url = await pg.createDatabase('harness_db');
      const c3 = new Client({ connectionString: url });
      await c3.connect();
      assert.equal((await c3.query<{ db: string }>('SELECT current_database() AS db')).rows[0]?.db, 'harness_db');
      procs = serverProcesses(pg.pid);
      assert.ok(procs.length > 3, 'the postmaster, its backends and helpers');
      for (const x of [c, c2, c3]) x.on('error', () => {}); // the server goes away under them
      await pg.stop();
    } finally {
      if (saved === undefined) delete process.env.PGPASSWORD;
      else process.env.PGPASSWORD = saved;
    }
    assert.equal(alive(pg.pid), false, 'the postmaster is gone');
    assert.deepEqual(procs.filter(alive), [], 'no backend is left');
    assert.equal(existsSync(pg.dir), false, 'its directory is removed');
  });

  it('refuses a wrong password', async (t) => {
    const pg = await postgresFor(t);
    if (pg === null) return;
    const c = new Client({ host: pg.host, port: pg.port, user: pg.user, password: 'not-the-password', database: 'postgres' });
    await assert.rejects(c.connect(), /password authentication failed/);
  });
});

const HELPER = join(__dirname, '..', 'helpers', 'postgres.js');

/** Run a script in a child node process with `env` added; its stdout, stderr and status. */
function node(script: string, env: Record<string, string>): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['-e', script], { env: { ...process.env, ...env }, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('the PostgreSQL test harness, when the test process goes', () => {
  for (const how of ['exits without stop()', 'is terminated (SIGTERM)'] as const) {
    it(`leaves nothing running when the test process ${how}`, (t) => {
      if (postgresMissing() !== undefined) return t.skip(postgresMissing());
      const end = how === 'exits without stop()' ? 'process.exit(0)' : "process.kill(process.pid, 'SIGTERM')";
      const r = node(
        `const h = require(${JSON.stringify(HELPER)});
         h.startPostgres().then((pg) => {
           console.log(JSON.stringify({ dir: pg.dir, procs: h.serverProcesses(pg.pid) }));
           setInterval(() => {}, 1000); // alive until it ends itself
           ${end};
         });`,
        {},
      );
      if (how === 'is terminated (SIGTERM)') assert.equal(r.status, 128 + 15, r.stderr);
      const out = JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '{}') as { dir: string; procs: number[] };
      assert.ok(out.procs.length > 1, r.stderr);
      assert.deepEqual(out.procs.filter(alive), [], 'no server process is left');
      assert.equal(existsSync(out.dir), false, 'its directory is removed');
    });
  }
});

describe('the PostgreSQL test harness without PostgreSQL', () => {
  const script = `const h = require(${JSON.stringify(HELPER)});
    try { console.log('skip: ' + h.postgresMissing()); } catch (err) { console.log('fail: ' + err.message); process.exit(3); }`;

  it('skips, saying how to install it', () => {
    const r = node(script, { APM_POSTGRES_BINDIR: '/nonexistent', APM_REQUIRE_POSTGRES: '' });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^skip: PostgreSQL is not installed: make test-deps installs it/);
  });

  it('fails instead when APM_REQUIRE_POSTGRES=1 (make test)', () => {
    const r = node(script, { APM_POSTGRES_BINDIR: '/nonexistent', APM_REQUIRE_POSTGRES: '1' });
    assert.equal(r.status, 3, r.stderr);
    assert.match(r.stdout, /^fail: PostgreSQL is not installed.*APM_REQUIRE_POSTGRES=1 requires it/);
  });

  it('finds it when installed', (t) => {
    if (postgresMissing() !== undefined) return t.skip(postgresMissing());
    const r = node(script, { APM_REQUIRE_POSTGRES: '1' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), 'skip: undefined');
  });
});
