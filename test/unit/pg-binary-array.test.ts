import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { readFileSync } from 'node:fs';
import { Pool, Query } from 'pg';
import { ArrayBatch, OID, bytesArray, float8Array, int2Array, int8Array } from '@apm-sidecar/collector/dist/store/pg/binary-array';
import { queryBound } from '@apm-sidecar/collector/dist/store/pg/bound-query';
import { type PgServer, postgresMissing, startPostgres } from '../helpers/postgres';

/**
 * The binary arrays the PostgreSQL store sends (pg/binary-array.ts): ArrayBatch writes a batch's
 * columns into one buffer; PostgreSQL must read back every value as it was, NULLs where meant.
 */

describe('binary arrays for PostgreSQL (pg/binary-array.ts)', () => {
  it('ArrayBatch writes the bytes of the one-array writers, column after column, filling exactly the size asked', () => {
    const f = [1.5, -0, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 2 ** -1074, Number.MAX_VALUE];
    const i8 = [0, 1, -1, 2 ** 53 - 1, -(2 ** 53 - 1), 2 ** 32, -(2 ** 32) - 1, 7.9];
    const i2 = [0, 1, -1, 32767, -32768];
    const b = [Buffer.from('ab'), Buffer.alloc(0), null, Buffer.from([0, 255])];
    const size =
      ArrayBatch.fixedSize(f.length, 8) + ArrayBatch.fixedSize(i8.length, 8) + ArrayBatch.fixedSize(i2.length, 2) + ArrayBatch.bytesSize(b, b.length);
    const out = new ArrayBatch(size);
    // Without nullNaN, NaN and ±Infinity are float8 values, as float8Array writes them.
    assert.deepEqual(out.float8(f, f.length, false), float8Array(f));
    assert.deepEqual(out.int8(i8, i8.length, false), int8Array(i8));
    assert.deepEqual(out.int2(i2, i2.length), int2Array(i2));
    assert.deepEqual(out.bytes(b, b.length), bytesArray(b));
    // Full: one more element does not fit.
    assert.throws(() => out.int2([1], 1), RangeError);
  });

  it('with nullNaN, NaN is NULL (the has-nulls flag set) and ±Infinity stays a value; n takes a prefix of the values', () => {
    const out = new ArrayBatch(1024);
    assert.deepEqual(out.float8([1, Number.NaN, 3], 3, true), float8Array([1, null, 3]));
    assert.deepEqual(out.int8([Number.NaN, 5], 2, true), int8Array([null, 5]));
    assert.deepEqual(out.float8([Number.POSITIVE_INFINITY, 2], 2, true), float8Array([Number.POSITIVE_INFINITY, 2]));
    assert.deepEqual(out.float8([1, 2, 3], 2, true), float8Array([1, 2]));
    // No NaN: the has-nulls flag is clear.
    assert.equal(out.float8([1, 2], 2, true).readInt32BE(4), 0);
  });

  it('in bind mode, is a Bind message: each parameter behind its length, all binary, and refuses a parameter too many or too few', () => {
    const out = new ArrayBatch(2 + ArrayBatch.fixedSize(1, 8), { statement: 's1', params: 2 });
    out.param(Buffer.from('ab'));
    assert.throws(() => out.message(), { code: 'ERR_INTERNAL', message: /1 parameters not written/ });
    out.float8([0.5], 1, false);
    const m = out.message();
    const want = Buffer.concat([
      Buffer.from('B'),
      Buffer.from([0, 0, 0, m.length - 1]),
      Buffer.from('\0s1\0', 'latin1'),
      Buffer.from([0, 1, 0, 1, 0, 2]),
      Buffer.from([0, 0, 0, 2]),
      Buffer.from('ab'),
      Buffer.from([0, 0, 0, 32]),
      float8Array([0.5]),
      Buffer.from([0, 1, 0, 0]),
    ]);
    assert.equal(m.toString('hex'), want.toString('hex'));
    assert.throws(() => out.param(Buffer.from('x')), { code: 'ERR_INTERNAL', message: /more parameters than declared/ });
  });

  it('an integer beyond int8 refuses the batch (ERR_MALFORMED_MESSAGE) instead of wrapping; the limits themselves are written', () => {
    for (const x of [2 ** 63, -(2 ** 63) - 4096, 2 ** 64, Number.POSITIVE_INFINITY]) {
      const out = new ArrayBatch(1024);
      assert.throws(() => out.int8([x], 1, true), { code: 'ERR_MALFORMED_MESSAGE' }, String(x));
      assert.throws(() => int8Array([x]), { code: 'ERR_MALFORMED_MESSAGE' }, String(x));
    }
    const out = new ArrayBatch(1024);
    const b = out.int8([-(2 ** 63), 2 ** 63 - 1024], 2, true);
    assert.equal(b.readBigInt64BE(b.length - 20), -(2n ** 63n));
    assert.equal(b.readBigInt64BE(b.length - 8), 2n ** 63n - 1024n);
  });

  it('empty columns are arrays of no dimension', () => {
    const out = new ArrayBatch(ArrayBatch.fixedSize(0, 8) * 2 + ArrayBatch.fixedSize(0, 2) + ArrayBatch.bytesSize([], 0));
    for (const a of [out.float8([], 0, true), out.int8([], 0, false), out.int2([], 0), out.bytes([], 0, OID.text)]) {
      assert.equal(a.length, 12);
      assert.equal(a.readInt32BE(0), 0);
    }
  });
});

describe('binary arrays read by PostgreSQL', { skip: postgresMissing() }, () => {
  let server: PgServer | null = null;
  let pool: Pool | null = null;
  before(async () => {
    server = await startPostgres();
    pool = new Pool({ host: server.host, port: server.port, user: server.user, password: server.password, database: 'postgres', max: 1 });
    pool.on('error', () => {});
  });
  after(async () => {
    await pool?.end();
    await server?.stop();
  });

  /** The elements of `arr` as PostgreSQL reads them (cast to text, so nothing is lost on the way back), in order. */
  async function elements(arr: Buffer, type: string): Promise<(string | null)[]> {
    const r = await (pool as Pool).query({ text: `SELECT e::text AS e FROM unnest($1::${type}[]) WITH ORDINALITY AS u(e, i) ORDER BY i`, values: [arr] });
    return r.rows.map((x: { e: string | null }) => x.e);
  }

  it('reads NaN, ±Infinity, -0, NULL and extreme float8 values as written', async () => {
    const v = [1.5, -0, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 2 ** -1074, Number.MAX_VALUE, 0.1];
    const out = new ArrayBatch(2 * ArrayBatch.fixedSize(v.length, 8));
    assert.deepEqual(await elements(out.float8(v, v.length, false), 'float8'), [
      '1.5',
      '-0',
      'NaN',
      'Infinity',
      '-Infinity',
      '5e-324',
      '1.7976931348623157e+308',
      '0.1',
    ]);
    assert.deepEqual(await elements(out.float8([Number.NaN, 2, Number.NaN], 3, true), 'float8'), [null, '2', null]);
  });

  it('reads int8 and int2 values at their limits, and NULLs', async () => {
    const v = [0, -1, 2 ** 53 - 1, -(2 ** 53 - 1), 2 ** 32, -(2 ** 32), 2 ** 31, -(2 ** 31) - 1, 1_777_000_000_000];
    const out = new ArrayBatch(2 * ArrayBatch.fixedSize(v.length, 8) + ArrayBatch.fixedSize(3, 2));
    assert.deepEqual(
      await elements(out.int8(v, v.length, false), 'int8'),
      v.map((x) => String(x)),
    );
    assert.deepEqual(await elements(out.int8([Number.NaN, 7], 2, true), 'int8'), [null, '7']);
    assert.deepEqual(await elements(out.int2([32767, -32768, 0], 3), 'int2'), ['32767', '-32768', '0']);
  });

  it('reads bytea and UTF-8 text elements, empty ones and NULLs', async () => {
    const b = [Buffer.from([0, 1, 255]), Buffer.alloc(0), null, Buffer.from('é"\\{},', 'utf8')];
    const out = new ArrayBatch(2 * ArrayBatch.bytesSize(b, b.length));
    assert.deepEqual(await elements(out.bytes(b, b.length), 'bytea'), ['\\x0001ff', '\\x', null, `\\x${Buffer.from('é"\\{},', 'utf8').toString('hex')}`]);
    assert.deepEqual(await elements(out.bytes(b.slice(1), 3, OID.text), 'text'), ['', null, 'é"\\{},']);
  });

  it('runs a statement with a Bind message built in place: parsed once per connection, answers and errors as the driver gives them', async () => {
    const text = 'SELECT $1::text AS a, sum(x) AS s, count(*)::int AS n FROM unnest($2::float8[]) AS x';
    const bind = (a: string, xs: number[]) => {
      const p = Buffer.from(a, 'utf8');
      const out = new ArrayBatch(p.length + ArrayBatch.fixedSize(xs.length, 8), { statement: 'bound-1', params: 2 });
      out.param(p);
      out.float8(xs, xs.length, true);
      return out.message();
    };
    const c = await (pool as Pool).connect();
    try {
      for (let round = 0; round < 3; round++) {
        const r = await queryBound<{ a: string; s: number; n: number }>(c, 'bound-1', text, bind(`é${round}`, [1, 2.5, Number.NaN, round]));
        assert.deepEqual(r.rows, [{ a: `é${round}`, s: 3.5 + round, n: 4 }]);
      }
      // An error: rejected with the server's error, and the connection still answers (in and out of a transaction).
      await c.query('BEGIN');
      await assert.rejects(queryBound(c, 'bound-2', 'SELECT 1 / ($1::int - 1) AS x', bindInt(1)), /division by zero/);
      await c.query('ROLLBACK');
      assert.deepEqual((await queryBound(c, 'bound-2', 'SELECT 1 / ($1::int - 1) AS x', bindInt(2))).rows, [{ x: 1 }]);
      // A message whose values the server refuses (NaN in an int column is not reachable; a text that is not UTF-8 is).
      const badText = new ArrayBatch(2 + ArrayBatch.fixedSize(0, 8), { statement: 'bound-1', params: 2 });
      badText.param(Buffer.from([0xff, 0xfe]));
      badText.float8([], 0, true);
      await assert.rejects(queryBound(c, 'bound-1', text, badText.message()), /invalid byte sequence/);
      assert.equal((await c.query('SELECT 7 AS x')).rows[0].x, 7);
    } finally {
      c.release();
    }

    function bindInt(v: number): Buffer {
      const out = new ArrayBatch(4, { statement: 'bound-2', params: 1 });
      const b = Buffer.alloc(4);
      b.writeInt32BE(v);
      out.param(b);
      return out.message();
    }
  });

  it('reads empty arrays as no rows, and a large batch of 100,000 rows of several columns in one buffer', async () => {
    const empty = new ArrayBatch(ArrayBatch.fixedSize(0, 8));
    assert.deepEqual(await elements(empty.float8([], 0, true), 'float8'), []);
    const n = 100_000;
    const f = Array.from({ length: n }, (_, i) => (i % 1000 === 0 ? Number.NaN : i / 4));
    const k = Array.from({ length: n }, (_, i) => i * 1_000_003);
    const b = Array.from({ length: n }, (_, i) => (i % 3 === 0 ? null : Buffer.from(String(i))));
    const out = new ArrayBatch(ArrayBatch.fixedSize(n, 8) * 2 + ArrayBatch.bytesSize(b, n));
    const cols = [out.float8(f, n, true), out.int8(k, n, false), out.bytes(b, n)];
    const r = await (pool as Pool).query({
      text: `SELECT count(*)::int AS n, count(f)::int AS f, sum(f) AS fs, sum(k)::text AS ks, count(b)::int AS b, sum(length(b))::int AS bl
        FROM unnest($1::float8[], $2::int8[], $3::bytea[]) AS u(f, k, b)`,
      values: cols,
    });
    const want = {
      n,
      f: f.filter((x) => !Number.isNaN(x)).length,
      fs: f.filter((x) => !Number.isNaN(x)).reduce((a, x) => a + x, 0),
      ks: String(k.reduce((a, x) => a + BigInt(x), 0n)),
      b: b.filter((x) => x !== null).length,
      bl: b.reduce((a, x) => a + (x === null ? 0 : x.length), 0),
    };
    assert.deepEqual(r.rows[0], want);
  });
});

describe('the driver bound-query.ts replaces one step of', () => {
  it('is pg 8.23.1, whose Query.prepare and connection methods it relies on: an upgrade must re-check it', () => {
    const pkg = JSON.parse(readFileSync(require.resolve('pg/package.json', { paths: [require.resolve('@apm-sidecar/collector')] }), 'utf8')) as {
      version: string;
    };
    assert.equal(pkg.version, '8.23.1');
    const proto = Query.prototype as unknown as Record<string, unknown>;
    for (const m of ['prepare', 'hasBeenParsed', '_getRows']) assert.equal(typeof proto[m], 'function', `Query.prototype.${m}`);
  });
});
