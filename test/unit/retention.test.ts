import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import type { Logger } from '@apm-sidecar/sidecar/dist/logger';
import { RetentionError, RetentionStore, type StoredPack, type Synchronous } from '@apm-sidecar/sidecar/dist/retention/store';

const roots: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'apm-retention-'));
  roots.push(d);
  return d;
}
after(() => {
  for (const d of roots) rmSync(d, { recursive: true, force: true });
});

interface FakeLog {
  log: Logger;
  errors: { obj: Record<string, unknown>; msg: string }[];
}
function fakeLog(): FakeLog {
  const errors: { obj: Record<string, unknown>; msg: string }[] = [];
  const noop = () => {};
  const log = { error: (obj: Record<string, unknown>, msg: string) => errors.push({ obj, msg }), warn: noop, info: noop, debug: noop } as unknown as Logger;
  return { log, errors };
}

const stores: RetentionStore[] = [];
function open(dir: string, sync: Synchronous = 'NORMAL', log = fakeLog().log): RetentionStore {
  const s = RetentionStore.open(dir, sync, log);
  stores.push(s);
  return s;
}
after(() => {
  for (const s of stores) s.close();
});

/** A second connection on the same file: what another process (or a restart) would see. */
function peek<T>(store: RetentionStore, sql: string): T {
  const db = new Database(store.path, { readonly: true });
  try {
    return db.prepare(sql).get() as T;
  } finally {
    db.close();
  }
}

const turn = () => new Promise<void>((r) => setImmediate(r));
const frame = (instanceId: string, seq: number, intervalStart: number) => ({
  instanceId,
  seq,
  intervalStart,
  payload: Buffer.from(`frame ${instanceId} ${seq}`),
});
const pack = (packId: string, intervalStart: number, points: number): StoredPack => ({
  packId,
  intervalStart,
  intervalMs: 1000,
  body: Buffer.from(`pack ${packId}`),
  points,
});
const bt = (name: string, ts: number) => ({ name, ts, app: 'shop', instanceId: 'i1', pid: 42 });

describe('RetentionStore', () => {
  test('writes asked for in one turn of the loop are committed in one transaction; their callbacks run after the commit', async () => {
    const store = open(tempDir());
    const seen: { err: Error | null; frames: number; bt: number }[] = [];
    const done = (err: Error | null) => {
      // What is visible from another connection when the callback (the shim's ack) runs.
      seen.push({ err, ...peek<{ frames: number; bt: number }>(store, 'SELECT (SELECT count(*) FROM frames) AS frames, (SELECT count(*) FROM bt) AS bt') });
    };
    const before = store.commits;
    store.addFrame(frame('i1', 1, 1000), done);
    store.addFrame(frame('i1', 2, 1000), done);
    store.addBt(bt('GET /pay', 5), 3, done);
    store.addFrame(frame('i2', 1, 2000), done);
    assert.equal(seen.length, 0, 'no callback before the commit');
    await turn();
    assert.equal(store.commits, before + 1, 'one transaction for the group');
    assert.equal(seen.length, 4);
    for (const s of seen) assert.deepEqual(s, { err: null, frames: 3, bt: 1 }, 'every row is committed before any callback runs');
    assert.deepEqual(
      store.loadSeqs().sort((a, b) => a.instanceId.localeCompare(b.instanceId)),
      [
        { instanceId: 'i1', seq: 3 },
        { instanceId: 'i2', seq: 1 },
      ],
    );
  });

  test('a group commit that fails writes nothing and gives every callback the error', async () => {
    const store = open(tempDir());
    const errs: (Error | null)[] = [];
    store.addFrame(frame('i1', 1, 1000), (e) => errs.push(e));
    store.addFrame({ instanceId: 'i1', seq: 2, intervalStart: 1000, payload: {} as unknown as Buffer }, (e) => errs.push(e));
    await turn();
    assert.equal(errs.length, 2);
    for (const e of errs) assert.ok(e instanceof Error, 'both see the failure');
    assert.equal(store.loadFrames().length, 0, 'rolled back as a whole');
    assert.equal(store.loadSeqs().length, 0);
  });

  test('a frame committed with its interval’s seal but not folded into its packs survives the seal', async () => {
    const store = open(tempDir());
    store.addFrame(frame('i1', 1, 1000), () => {});
    await turn();
    // A straggler for the interval is written in the same group commit as the interval's seal:
    // it is aggregated only after the commit, into a re-opened interval, so it is in no pack yet.
    store.addFrame(frame('i1', 2, 1000), () => {});
    store.sealInterval([pack('p1', 1000, 3)], [{ instanceId: 'i1', seq: 1 }]);
    store.commit();
    assert.deepEqual(
      store.loadFrames().map((f) => [f.instanceId, f.seq, f.intervalStart]),
      [['i1', 2, 1000]],
      'the straggler is still retained',
    );
  });

  test('sealInterval replaces the frames folded into an interval by its packs atomically', async () => {
    const store = open(tempDir());
    store.addFrame(frame('i1', 1, 1000), () => {});
    store.addFrame(frame('i2', 1, 1000), () => {});
    store.addFrame(frame('i1', 2, 2000), () => {});
    await turn();
    store.sealInterval(
      [pack('p1', 1000, 3), pack('p2', 1000, 2)],
      [
        { instanceId: 'i1', seq: 1 },
        { instanceId: 'i2', seq: 1 },
      ],
    );
    store.commit();
    assert.deepEqual(
      store.loadFrames().map((f) => [f.instanceId, f.seq, f.intervalStart]),
      [['i1', 2, 2000]],
    );
    assert.deepEqual(
      store.loadPacks().map((p) => [p.packId, p.intervalStart, p.intervalMs, p.points, p.body.toString()]),
      [
        ['p1', 1000, 1000, 3, 'pack p1'],
        ['p2', 1000, 1000, 2, 'pack p2'],
      ],
    );

    // A pack that cannot be written (a value SQLite cannot bind): neither pack is stored and the frames stay.
    store.sealInterval([pack('p3', 2000, 1), { ...pack('p4', 2000, 1), body: {} as unknown as Buffer }], [{ instanceId: 'i1', seq: 2 }]);
    store.commit();
    assert.deepEqual(
      store.loadFrames().map((f) => f.intervalStart),
      [2000],
    );
    assert.deepEqual(
      store.loadPacks().map((p) => p.packId),
      ['p1', 'p2'],
    );
  });

  test('packAcked forgets a pack; btAcked marks a registration sent while keeping its name known', async () => {
    const store = open(tempDir());
    store.sealInterval([pack('p1', 1000, 1), pack('p2', 1000, 1)], []);
    store.addBt(bt('GET /a', 1), 1, () => {});
    store.addBt(bt('GET /b', 2), 2, () => {});
    store.addBt(bt('GET /a', 3), 3, () => {}); // the same name again: one row
    await turn();
    assert.equal(store.stats(Date.now()).btUnsent, 2);
    store.packAcked('p1');
    store.btAcked('GET /a');
    store.commit();
    assert.deepEqual(
      store.loadPacks().map((p) => p.packId),
      ['p2'],
    );
    assert.deepEqual(
      store.loadBt().map((b) => b.name),
      ['GET /b'],
    );
    assert.deepEqual([...store.knownBt()].sort(), ['GET /a', 'GET /b']);
    const s = store.stats(Date.now());
    assert.deepEqual([s.packs, s.btUnsent, s.frames, s.rows], [1, 1, 0, 2]);
  });

  test('purge drops packs and frames of intervals before the cutoff and returns the metric points it dropped', async () => {
    const store = open(tempDir());
    store.addFrame(frame('i1', 1, 1000), () => {});
    store.addFrame(frame('i1', 2, 5000), () => {});
    store.sealInterval([pack('a', 1000, 3), pack('b', 2000, 2), pack('c', 3000, 7), pack('d', 5000, 4)], []);
    // Not committed yet: purge commits what is pending first.
    assert.deepEqual(
      store.packsInOrder(2, (id) => id === 'a')?.map((p) => p.packId),
      ['b', 'c'],
      'the oldest packs first, skipping those named, at most the limit',
    );
    const r = store.purge(3000, 0);
    assert.deepEqual(r, {
      points: 5,
      frames: 1,
      packs: new Map([
        ['a', 3],
        ['b', 2],
      ]),
    });
    assert.deepEqual(
      store.loadPacks().map((p) => p.packId),
      ['c', 'd'],
      'an interval starting at the cutoff is kept',
    );
    assert.deepEqual(
      store.loadFrames().map((f) => f.intervalStart),
      [5000],
    );
    assert.equal(store.loadSeqs().length, 1, 'seqs seen after seqCutoff are kept');
    store.purge(0, Date.now() + 1);
    assert.equal(store.loadSeqs().length, 0, 'seqs not seen since seqCutoff are dropped');
  });

  test('what a run left is loaded after reopening: seqs, frames, packs, unsent registrations', async () => {
    const dir = tempDir();
    const first = RetentionStore.open(dir, 'NORMAL', fakeLog().log);
    first.addFrame(frame('i1', 1, 2000), () => {});
    first.addFrame(frame('i1', 2, 1000), () => {});
    first.addFrame(frame('i2', 7, 1000), () => {});
    first.addBt(bt('GET /late', 20), 3, () => {});
    first.addBt(bt('GET /early', 10), 4, () => {});
    first.addBt(bt('GET /sent', 15), 5, () => {});
    first.sealInterval([pack('p500', 500, 2)], []);
    first.btAcked('GET /sent');
    first.close(); // commits what is pending

    const again = open(dir);
    assert.deepEqual(
      again.loadSeqs().sort((a, b) => a.instanceId.localeCompare(b.instanceId)),
      [
        { instanceId: 'i1', seq: 5 },
        { instanceId: 'i2', seq: 7 },
      ],
    );
    assert.deepEqual(
      again.loadFrames().map((f) => [f.intervalStart, f.instanceId, f.seq, f.payload.toString()]),
      [
        [1000, 'i1', 2, 'frame i1 2'],
        [1000, 'i2', 7, 'frame i2 7'],
        [2000, 'i1', 1, 'frame i1 1'],
      ],
      'oldest interval first',
    );
    assert.deepEqual(
      again.loadPacks().map((p) => [p.packId, p.points, p.body.toString()]),
      [['p500', 2, 'pack p500']],
    );
    assert.deepEqual(
      again.loadBt().map((b) => [b.name, b.ts, b.app, b.instanceId, b.pid]),
      [
        ['GET /early', 10, 'shop', 'i1', 42],
        ['GET /late', 20, 'shop', 'i1', 42],
      ],
    );
    assert.deepEqual([...again.knownBt()].sort(), ['GET /early', 'GET /late', 'GET /sent']);
    const s = again.stats(10_500);
    assert.deepEqual([s.frames, s.packs, s.btUnsent, s.rows, s.oldestAgeMs], [3, 1, 2, 6, 10_000]);
  });

  test('synchronous is set as asked and read back; the journal is WAL', () => {
    const normal = open(tempDir(), 'NORMAL');
    const full = open(tempDir(), 'FULL');
    assert.equal(normal.synchronous(), 1);
    assert.equal(full.synchronous(), 2);
    assert.equal(peek<{ journal_mode: string }>(full, 'PRAGMA journal_mode').journal_mode, 'wal');
    assert.equal(statSync(full.path).mode & 0o777, 0o600, 'the file is private');
  });

  test('a file that is not a database is moved aside with one error line, and a fresh store works', async () => {
    const dir = tempDir();
    const garbage = randomBytes(8192);
    writeFileSync(join(dir, 'retention.db'), garbage);
    const { log, errors } = fakeLog();
    const store = open(dir, 'NORMAL', log);
    assert.equal(errors.length, 1);
    const aside = readdirSync(dir).filter((f) => f.startsWith('retention.db.corrupt-'));
    assert.equal(aside.length, 1);
    assert.equal(errors[0]?.obj.quarantined, join(dir, aside[0] as string));
    assert.match(errors[0]?.msg as string, /moved aside/);
    let ack: Error | null | undefined;
    store.addFrame(frame('i1', 1, 1000), (e) => {
      ack = e;
    });
    await turn();
    assert.equal(ack, null);
    assert.equal(store.loadFrames().length, 1);
  });

  test('a path that cannot be opened as a database (a directory) is moved aside too', () => {
    const dir = tempDir();
    mkdirSync(join(dir, 'retention.db'));
    writeFileSync(join(dir, 'retention.db', 'x'), 'x');
    const { log, errors } = fakeLog();
    const store = open(dir, 'NORMAL', log);
    assert.equal(errors.length, 1);
    assert.ok(statSync(store.path).isFile());
    const aside = readdirSync(dir).filter((f) => f.startsWith('retention.db.corrupt-'));
    assert.equal(aside.length, 1);
    assert.ok(existsSync(join(dir, aside[0] as string, 'x')), 'moved, not deleted');
  });

  test('a closed store refuses writes with a typed error instead of throwing', () => {
    const store = RetentionStore.open(tempDir(), 'NORMAL', fakeLog().log);
    store.close();
    let err: Error | null = null;
    store.addFrame(frame('i1', 1, 1000), (e) => {
      err = e;
    });
    assert.ok(err !== null && (err as Error) instanceof RetentionError);
    assert.equal((err as unknown as RetentionError).code, 'ERR_RETENTION_CLOSED');
    store.close(); // twice is fine
  });
});
