import assert from 'node:assert/strict';
import { chmodSync, writeFileSync } from 'node:fs';
import { type Socket, createServer } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Client } from 'pg';
import { PG_SCHEMA_VERSION, PostgresStore, migratePostgres, parsePostgresUrl } from '@apm-sidecar/collector/dist/store/pg/index';
import { type PgServer, postgresMissing, startPostgres } from '../helpers/postgres';
import { tempDirsRemovedAfter } from '../helpers/temp-dirs';

/** What is particular to the PostgreSQL store: its URL, its schema's versions, connecting and losing connections. */

const tempDir = tempDirsRemovedAfter('apm-pgstore-');

describe('the PostgreSQL store URL', () => {
  it('takes postgres:// and postgresql:// URLs, TCP or a socket directory, and shows them without password', () => {
    const t = parsePostgresUrl('postgres://apm@db.example:6543/apm_store');
    assert.deepEqual(
      [t.host, t.port, t.user, t.database, t.ssl, t.location, t.server],
      ['db.example', 6543, 'apm', 'apm_store', 'disable', 'postgres://apm@db.example:6543/apm_store', 'db.example:6543'],
    );
    const s = parsePostgresUrl('postgresql://apm@/apm_store?port=5433&host=/run/pg');
    assert.deepEqual([s.host, s.port, s.database, s.server], ['/run/pg', 5433, 'apm_store', '/run/pg/.s.PGSQL.5433']);
    assert.equal(s.location, 'postgresql://apm@/apm_store?host=/run/pg&port=5433');
    const d = parsePostgresUrl('postgres://[::1]/x?sslmode=verify-full');
    assert.deepEqual([d.host, d.port, d.user, d.ssl, d.server], ['::1', 5432, undefined, 'verify-full', '[::1]:5432']);
  });

  for (const [url, why] of [
    ['postgres://apm:secret@db:5432/x', /holds a password; give the password in PGPASSWORD/],
    ['postgres://apm:@db:5432/x', /holds a password/],
    ['postgres://apm@db:5432/', /names no database/],
    ['postgres://apm@db:99999/x', /bad port/],
    ['postgres://apm@db:5432/x?password=secret', /unknown parameter "password"/],
    ['postgres://apm@db:5432/x?host=relative/dir', /absolute path/],
    ['postgres://apm@/x', /names no host/],
    ['postgres://apm@a,b:5432/x', /bad host/],
    ['postgres://apm@db/x?sslmode=prefer', /unknown sslmode/],
    ['mysql://apm@db/x', /does not start with postgres/],
  ] as const) {
    it(`refuses ${url.replace('secret', '***')}`, () => {
      assert.throws(
        () => parsePostgresUrl(url),
        (err: Error & { code?: string }) => err.code === 'ERR_STORE_URL' && why.test(err.message) && !err.message.includes('secret'),
      );
    });
  }
});

describe('PostgresStore: schema, connecting, and connections lost', () => {
  let pg: PgServer | null = null;
  let dbs = 0;
  const stores: PostgresStore[] = [];
  const saved = { PGPASSWORD: process.env.PGPASSWORD, PGPASSFILE: process.env.PGPASSFILE };

  before(async () => {
    if (postgresMissing() !== undefined) return;
    pg = await startPostgres();
  });
  after(async () => {
    for (const s of stores) await s.close().catch(() => {});
    await pg?.stop();
  });

  /** A server and a new empty database on it, with PGPASSWORD set; null (test skipped) without PostgreSQL. */
  async function db(t: { skip: (m?: string) => void }): Promise<{ pg: PgServer; url: string } | null> {
    const missing = postgresMissing();
    if (missing !== undefined || pg === null) {
      t.skip(missing);
      return null;
    }
    process.env.PGPASSWORD = pg.password;
    delete process.env.PGPASSFILE;
    return { pg, url: await pg.createDatabase(`pgstore_${++dbs}`) };
  }

  async function open(url: string): Promise<PostgresStore> {
    const s = await PostgresStore.open(url, { poolSize: 3 });
    stores.push(s);
    return s;
  }

  async function admin(server: PgServer, database: string, sql: string): Promise<void> {
    const c = new Client({ host: server.host, port: server.port, user: server.user, password: server.password, database });
    await c.connect();
    try {
      await c.query(sql);
    } finally {
      await c.end();
    }
  }

  after(() => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });

  it('run refuses a database without the schema, naming the migrate command; migrate applies it once, even twice at a time', async (t) => {
    const d = await db(t);
    if (d === null) return;
    await assert.rejects(PostgresStore.open(d.url), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'ERR_STORE_NOT_MIGRATED');
      assert.ok(err.message.includes(`run apm-collector migrate --store ${d.url}`), err.message);
      return true;
    });
    const results = await Promise.all([migratePostgres(d.url), migratePostgres(d.url), migratePostgres(d.url)]);
    assert.deepEqual(results.map((r) => r.from).sort(), [0, PG_SCHEMA_VERSION, PG_SCHEMA_VERSION]);
    assert.ok(results.every((r) => r.to === PG_SCHEMA_VERSION));
    const s = await open(d.url);
    assert.equal(s.kind, 'postgres');
    assert.equal(s.location, d.url);
    assert.equal((await s.createKey('after-migrate')).created, true);
  });

  it('refuses a database of a newer schema, and an unversioned one holding tables of our names', async (t) => {
    const d = await db(t);
    if (d === null) return;
    await migratePostgres(d.url);
    await admin(d.pg, d.url.split('/').at(-1) as string, `INSERT INTO schema_version (version, applied_at) VALUES (${PG_SCHEMA_VERSION + 1}, 0)`);
    await assert.rejects(PostgresStore.open(d.url), { code: 'ERR_STORE_VERSION' });
    await assert.rejects(migratePostgres(d.url), { code: 'ERR_STORE_VERSION' });

    const other = await d.pg.createDatabase(`pgstore_${++dbs}`);
    await admin(d.pg, other.split('/').at(-1) as string, 'CREATE TABLE agents (note TEXT)');
    await assert.rejects(migratePostgres(other), { code: 'ERR_STORE_CORRUPT' });
    await assert.rejects(PostgresStore.open(other), { code: 'ERR_STORE_NOT_MIGRATED' });
  });

  it('takes the password from PGPASSWORD or PGPASSFILE, and says so when it is wrong or missing', async (t) => {
    const d = await db(t);
    if (d === null) return;
    await migratePostgres(d.url);
    process.env.PGPASSWORD = 'wrong';
    await assert.rejects(PostgresStore.open(d.url), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'ERR_STORE_AUTH');
      assert.match(err.message, /PGPASSWORD or PGPASSFILE/);
      assert.ok(!err.message.includes(d.pg.password));
      return true;
    });
    delete process.env.PGPASSWORD;
    const dir = tempDir();
    process.env.PGPASSFILE = join(dir, 'none');
    await assert.rejects(
      PostgresStore.open(d.url),
      (err: Error & { code?: string }) => err.code === 'ERR_STORE_AUTH' && /no password was given/.test(err.message),
    );
    const passfile = join(dir, 'pgpass');
    // libpq's format: the first line that matches wins; '*' matches anything; '\:' is a colon.
    const lines = [
      '# a comment',
      `127.0.0.1:${d.pg.port + 1}:*:*:not-this-one`,
      `127.0.0.1:${d.pg.port}:other_db:*:nor-this`,
      `127.0.0.1:*:*:${d.pg.user}:${d.pg.password}`,
      '*:*:*:*:w\\:rong',
    ];
    writeFileSync(passfile, `${lines.join('\n')}\n`, { mode: 0o644 });
    process.env.PGPASSFILE = passfile;
    // A password file others can read is not used (as libpq), and the error says why.
    await assert.rejects(
      PostgresStore.open(d.url),
      (err: Error & { code?: string }) => err.code === 'ERR_STORE_AUTH' && /open to other users .*chmod 600/.test(err.message),
    );
    chmodSync(passfile, 0o600);
    const s = await open(d.url);
    assert.deepEqual(await s.listKeys(), []);
  });

  it('names the server it cannot reach, and a database that does not exist', async (t) => {
    const d = await db(t);
    if (d === null) return;
    // A port nobody listens on: taken, then freed.
    const port = await new Promise<number>((resolve) => {
      const srv = createServer().listen(0, '127.0.0.1', () => {
        const a = srv.address();
        srv.close(() => resolve(typeof a === 'object' && a !== null ? a.port : 0));
      });
    });
    await assert.rejects(
      PostgresStore.open(`postgres://apm@127.0.0.1:${port}/x`),
      (err: Error & { code?: string }) => err.code === 'ERR_STORE_UNAVAILABLE' && err.message.includes(`127.0.0.1:${port}`),
    );
    await assert.rejects(migratePostgres(`postgres://apm@127.0.0.1:${port}/x`), { code: 'ERR_STORE_UNAVAILABLE' });
    await assert.rejects(
      PostgresStore.open(d.pg.urlFor('no_such_db')),
      (err: Error & { code?: string }) => err.code === 'ERR_STORE_UNAVAILABLE' && /no_such_db/.test(err.message),
    );
    // A server that takes the connection and never answers: unavailable once the connect timeout passes.
    const silentConns: Socket[] = [];
    const silent = createServer((sock) => {
      sock.on('error', () => {});
      silentConns.push(sock);
    });
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const silentPort = (silent.address() as { port: number }).port;
    try {
      for (const attempt of [
        () => PostgresStore.open(`postgres://apm@127.0.0.1:${silentPort}/x`, { connectTimeoutMs: 300 }),
        () => migratePostgres(`postgres://apm@127.0.0.1:${silentPort}/x`, { connectTimeoutMs: 300 }),
      ]) {
        await assert.rejects(
          attempt(),
          (err: Error & { code?: string }) => err.code === 'ERR_STORE_UNAVAILABLE' && err.message.includes(`127.0.0.1:${silentPort}`),
        );
      }
    } finally {
      silent.close();
      for (const c of silentConns.splice(0)) c.destroy();
    }
    // Over the server's Unix socket.
    await migratePostgres(d.url);
    const s = await open(`postgres://${d.pg.user}@/${d.url.split('/').at(-1)}?host=${d.pg.socketDir}&port=${d.pg.port}`);
    assert.equal((await s.createKey('over-socket')).created, true);
  });

  it('survives its connections being cut: told, not crashed, and the next write works', async (t) => {
    const d = await db(t);
    if (d === null) return;
    await migratePostgres(d.url);
    const s = await open(d.url);
    const errors: Error[] = [];
    s.onError = (err) => errors.push(err);
    await Promise.all([s.createKey('a'), s.createKey('b'), s.listKeys()]);
    await admin(d.pg, 'postgres', "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'apm-collector'");
    for (let i = 0; i < 100 && errors.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    assert.ok(errors.length > 0, 'the pool reported the cut connections');
    // A connection whose end the pool has not read yet fails the one write it is given (not
    // acked, sent again); the pool then opens new ones. At most one failure per pooled connection.
    let failures = 0;
    for (;;) {
      try {
        await s.heartbeat({ id: 'c', host: 'h', pid: 1, agentsAddress: 'a', httpAddress: 'b' }, 1);
        break;
      } catch (err) {
        assert.match(String((err as { code?: string }).code ?? (err as Error).message), /57P01|terminated/);
        assert.ok(++failures <= 3, `${failures} writes failed`);
      }
    }
    assert.equal((await s.listCollectors()).length, 1);
  });

  it('a write while the server is gone rejects (nothing acked), without crashing', async (t) => {
    if (postgresMissing() !== undefined) return t.skip(postgresMissing());
    // A server of its own, stopped under the store.
    const own = await startPostgres();
    process.env.PGPASSWORD = own.password;
    const url = await own.createDatabase('gone');
    await migratePostgres(url);
    const s = await PostgresStore.open(url, { poolSize: 2 });
    s.onError = () => {};
    await s.createKey('x');
    await own.stop();
    await assert.rejects(s.createKey('y'));
    await assert.rejects(
      s.storeText({ projectId: 'p', agentId: 'a' }, [
        { kind: 'event', origin: { app: 'a', instanceId: 'i', pid: 1 }, event: { ts: 1, type: 't', message: 'm' } },
      ]),
    );
    await s.close().catch(() => {});
  });
});
