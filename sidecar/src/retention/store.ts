import { existsSync, mkdirSync, renameSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type Database from 'better-sqlite3';
import type { Logger } from '../logger';
import { restoreAccess } from './file-access';
import { type Salvaged, salvageInto } from './salvage';
import { SCHEMA_VERSION, type Statements, openDatabase, prepare } from './schema';
import {
  RetentionClosedError,
  RetentionDurabilityError,
  RetentionUnavailableError,
  type SpaceUsage,
  type StorageCondition,
  type StoredBt,
  type StoredFrame,
  type StoredPack,
  type Synchronous,
  isPassingStorageError,
} from './types';

export * from './types';

interface Op {
  run(): void;
  done?: (err: Error | null) => void;
}

/** Bounded: past it the oldest maintenance writes are given up (a pack then goes out twice at worst, after a restart). */
const MAX_RETRIED_OPS = 10_000;

/**
 * The sidecar's retention, in SQLite (WAL).
 *
 *   frames  raw shim metric frames, written before the shim is acked; folded
 *           into a pack when their interval closes
 *   packs   closed intervals, encoded as sent upstream; deleted on the
 *           collector's ack, purged past retention_ms
 *   seqs    highest committed durable seq per shim instance (de-duplication
 *           survives a restart)
 *   instances  SHA-256 of the secret each shim instance is bound to (the
 *           binding survives a restart, so an impersonator cannot claim the
 *           instance while its shim reconnects)
 *   bt      business-transaction registrations: no age limit, one row per name
 *
 * Writes are group-committed: everything asked for within one turn of the
 * event loop goes in one transaction, and the callbacks (the shims' acks) run
 * after the commit. `synchronous` is set explicitly and read back at start.
 * WAL with synchronous=NORMAL survives a kill -9 of the sidecar (the WAL is in
 * the OS page cache); FULL also survives power loss, at one fsync per commit.
 *
 * A file that is not a readable database is moved aside (quarantined) with one
 * log line and a fresh one is created, so the sidecar never crash-loops. A
 * database that cannot be opened for a passing reason (disk full, I/O error,
 * busy) is not moved aside: the error is thrown and the caller retries later.
 *
 * No storage error escapes from a write path: a failed group commit hands the
 * error to every callback (a shim frame is then not acked), keeps the
 * maintenance writes (seal, ack, drop) for the next commit, and turns the
 * `failing` condition on until a commit succeeds again (`onCondition`).
 */
export class RetentionStore {
  private readonly db: Database.Database;
  private ops: Op[] = [];
  private scheduled = false;
  private closed = false;
  private readonly st: Statements;
  readonly path: string;
  commits = 0;
  /** Maintenance writes of a failed commit, run again first in the next one. */
  private retry: Op[] = [];
  readonly condition: StorageCondition = { failing: false, since: Date.now(), lastError: null, failedCommits: 0 };
  /** Called when the condition flips: once when commits start failing, once when one succeeds again. */
  onCondition: (c: StorageCondition) => void = () => {};
  /** Called on every failed commit or maintenance transaction. */
  onError: (err: Error) => void = () => {};

  static open(dir: string, synchronous: Synchronous, log: Logger): RetentionStore {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const path = join(dir, 'retention.db');
    restoreAccess(path, log);
    try {
      return new RetentionStore(path, synchronous);
    } catch (err) {
      if (err instanceof RetentionDurabilityError) throw err;
      if (isPassingStorageError(err)) throw new RetentionUnavailableError(`retention database ${path} cannot be opened now: ${(err as Error).message}`);
      const aside = `${path}.corrupt-${new Date().toISOString().replace(/[:.]/g, '-')}`;
      for (const suffix of ['', '-wal', '-shm']) {
        if (existsSync(path + suffix)) renameSync(path + suffix, aside + suffix);
      }
      log.error(
        { path, quarantined: aside, reason: (err as Error).message },
        `retention database unreadable (${(err as Error).message}): moved aside to ${aside}; starting with an empty one`,
      );
      const store = new RetentionStore(path, synchronous);
      store.salvage(aside, log);
      return store;
    }
  }

  /** Copy what is still readable in the quarantined file `aside` into this (fresh) one; logged, never thrown. */
  private salvage(aside: string, log: Logger): void {
    let r: Salvaged | null;
    try {
      r = salvageInto(this.db, aside);
    } catch (err) {
      log.warn({ quarantined: aside, err: (err as Error).message }, `nothing salvaged from the quarantined retention: ${(err as Error).message}`);
      return;
    }
    if (r === null) return; // not a database at all: nothing to read
    const rows = Object.values(r.rows).reduce((a, n) => a + n, 0);
    log.warn({ quarantined: aside, rows: r.rows, stoppedAt: r.error }, `salvaged ${rows} rows from the quarantined retention`);
  }

  private constructor(path: string, synchronous: Synchronous) {
    this.path = path;
    this.db = openDatabase(path, synchronous);
    this.st = prepare(this.db);
  }

  // --- group-committed writes ----------------------------------------------------

  private enqueue(op: Op): void {
    if (this.closed) {
      op.done?.(new RetentionClosedError());
      return;
    }
    this.ops.push(op);
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.commit());
    }
  }

  /** Run every queued write in one transaction, then their callbacks. Never throws. */
  commit(): void {
    this.scheduled = false;
    if (this.closed) return;
    const ops = this.retry.length === 0 ? this.ops : [...this.retry, ...this.ops];
    if (ops.length === 0) return;
    this.ops = [];
    this.retry = [];
    let error: Error | null = null;
    try {
      this.db.transaction(() => {
        for (const op of ops) op.run();
      })();
      this.commits++;
    } catch (err) {
      error = err as Error;
      // Writes nobody waits for are kept for the next commit; callers with a callback decide themselves.
      this.retry = ops.filter((op) => op.done === undefined).slice(-MAX_RETRIED_OPS);
    }
    this.noteOutcome(error);
    for (const op of ops) op.done?.(error);
  }

  /**
   * While commits fail, one small real write (the schema version in the header page) tells
   * when the storage takes writes again, so the condition ends without waiting for a shim.
   */
  probe(): void {
    this.enqueue({ run: () => this.db.pragma(`user_version = ${SCHEMA_VERSION}`), done: () => {} });
  }

  /** Maintenance writes waiting for a commit that succeeds. */
  get retrying(): number {
    return this.retry.length;
  }

  private noteOutcome(error: Error | null): void {
    const c = this.condition;
    if (error !== null) {
      this.onError(error);
      c.failedCommits++;
      c.lastError = error.message;
      if (!c.failing) {
        c.failing = true;
        c.since = Date.now();
        this.onCondition(c);
      }
    } else if (c.failing) {
      c.failing = false;
      c.since = Date.now();
      this.onCondition(c);
    }
  }

  /** Run `fn` in a transaction of its own (after what is queued); null when it failed (the condition records why). */
  private guarded<T>(fn: () => T): T | null {
    this.commit();
    if (this.closed) return null;
    try {
      // A success here does not end a failing condition: a transaction that deletes nothing
      // writes nothing, so it proves nothing; group commits and probe() do.
      return this.db.transaction(fn)();
    } catch (err) {
      this.noteOutcome(err as Error);
      return null;
    }
  }

  /** A shim's metrics frame and its seq; `done` runs after the commit (then the shim may be acked). */
  addFrame(f: StoredFrame, done: (err: Error | null) => void): void {
    const now = Date.now();
    this.enqueue({
      run: () => {
        this.st.insertFrame.run(f.instanceId, f.seq, f.intervalStart, f.payload);
        this.st.upsertSeq.run(f.instanceId, f.seq, now);
      },
      done,
    });
  }

  /** The secret hash an instance is bound to (its first Hello); a binding is never replaced. */
  addInstance(instanceId: string, secretHash: Buffer, done: (err: Error | null) => void): void {
    const now = Date.now();
    this.enqueue({ run: () => this.st.insertInstance.run(instanceId, secretHash, now), done });
  }

  /** A registration (de-duplicated by name) and its seq. */
  addBt(b: StoredBt, seq: number, done: (err: Error | null) => void): void {
    const now = Date.now();
    this.enqueue({
      run: () => {
        this.st.insertBt.run(b.name, b.ts, b.app, b.instanceId, b.pid);
        this.st.upsertSeq.run(b.instanceId, seq, now);
      },
      done,
    });
  }

  /**
   * An interval closed: its packs replace the raw frames folded into them, atomically. Only those:
   * a frame of the same interval written meanwhile (a straggler, aggregated after this seal was
   * asked for) is in no pack yet and stays until its own seal.
   */
  sealInterval(packs: StoredPack[], frames: readonly { instanceId: string; seq: number }[]): void {
    this.enqueue({
      run: () => {
        for (const p of packs) this.st.insertPack.run(p.packId, p.intervalStart, p.intervalMs, p.points, p.body);
        for (const f of frames) this.st.deleteFrame.run(f.instanceId, f.seq);
      },
    });
  }

  packAcked(packId: string): void {
    this.enqueue({ run: () => this.st.deletePack.run(packId) });
  }

  btAcked(name: string): void {
    this.enqueue({ run: () => this.st.btSent.run(name) });
  }

  /**
   * Drop packs and frames of intervals that started before `cutoff`; returns the metric points
   * purged from packs (in all and per pack), or null when the storage failed (nothing was dropped).
   */
  purge(cutoff: number, seqCutoff: number): { points: number; frames: number; packs: Map<string, number> } | null {
    return this.guarded(() => {
      let points = 0;
      const packs = new Map<string, number>();
      for (const r of this.st.purgePacks.all(cutoff) as { packId: string; points: number }[]) {
        points += r.points;
        packs.set(r.packId, r.points);
      }
      const frames = this.st.purgeFrames.run(cutoff).changes;
      this.st.purgeSeqs.run(seqCutoff);
      // A binding goes with its instance's de-duplication state, not before.
      this.st.purgeInstances.run(seqCutoff);
      return { points, frames, packs };
    });
  }

  /**
   * Up to `limit` packs, oldest interval first, skipping those `skip` names (in memory or being
   * sent): where queue1 loads its spilled packs back from. Null when the storage failed.
   */
  packsInOrder(limit: number, skip: (packId: string) => boolean): StoredPack[] | null {
    return this.guarded(() => {
      const out: StoredPack[] = [];
      for (const r of this.st.packsInOrder.iterate() as IterableIterator<StoredPack>) {
        if (out.length >= limit) break;
        if (!skip(r.packId)) out.push(r);
      }
      return out;
    });
  }

  /**
   * Free at least `bytes` of row data by dropping the oldest packs (closed intervals waiting for
   * the collector); open intervals' frames are never dropped here, nor packs that `keep` names
   * (those being sent: they may still be delivered, and must not be counted dropped as well).
   * Null when the storage failed.
   */
  dropOldest(bytes: number, keep: (packId: string) => boolean = () => false): { packIds: string[]; points: number; bytes: number } | null {
    return this.guarded(() => {
      const packIds: string[] = [];
      let points = 0;
      let freed = 0;
      for (const r of this.st.oldestPacks.iterate() as IterableIterator<{ packId: string; points: number; bytes: number }>) {
        if (freed >= bytes) break;
        if (keep(r.packId)) continue;
        packIds.push(r.packId);
        points += r.points;
        freed += r.bytes;
      }
      for (const id of packIds) this.st.deletePack.run(id);
      return { packIds, points, bytes: freed };
    });
  }

  /**
   * Copy the WAL into the database and truncate it to nothing: the WAL otherwise keeps its
   * size (up to a thousand pages) on disk, which is what a filesystem short of space needs back.
   * False when it could not be done now.
   */
  checkpoint(): boolean {
    this.commit();
    if (this.closed) return false;
    try {
      const r = this.db.pragma('wal_checkpoint(TRUNCATE)') as { busy: number }[];
      return r[0]?.busy === 0;
    } catch {
      return false;
    }
  }

  /** Bytes used and held by the database; null when it cannot be read now. */
  usage(): SpaceUsage | null {
    if (this.closed) return null;
    try {
      const pageSize = this.db.pragma('page_size', { simple: true }) as number;
      const pages = this.db.pragma('page_count', { simple: true }) as number;
      const free = this.db.pragma('freelist_count', { simple: true }) as number;
      let wal = 0;
      try {
        wal = statSync(`${this.path}-wal`).size;
      } catch {
        // no WAL file yet
      }
      return { usedBytes: (pages - free) * pageSize, fileBytes: pages * pageSize + wal, freelistBytes: free * pageSize };
    } catch {
      return null;
    }
  }

  // --- start-up ---------------------------------------------------------------

  loadSeqs(): { instanceId: string; seq: number }[] {
    return this.db.prepare('SELECT instance_id AS instanceId, seq FROM seqs ORDER BY seen_at').all() as { instanceId: string; seq: number }[];
  }

  loadInstances(): { instanceId: string; secretHash: Buffer }[] {
    return this.db.prepare('SELECT instance_id AS instanceId, secret_hash AS secretHash FROM instances ORDER BY seen_at').all() as {
      instanceId: string;
      secretHash: Buffer;
    }[];
  }

  loadFrames(): StoredFrame[] {
    return this.db
      .prepare('SELECT instance_id AS instanceId, seq, interval_start AS intervalStart, payload FROM frames ORDER BY interval_start, rowid')
      .all() as StoredFrame[];
  }

  loadPacks(): StoredPack[] {
    return this.db
      .prepare('SELECT pack_id AS packId, interval_start AS intervalStart, interval_ms AS intervalMs, points, body FROM packs ORDER BY interval_start, rowid')
      .all() as StoredPack[];
  }

  loadBt(): StoredBt[] {
    return this.db.prepare('SELECT name, ts, app, instance_id AS instanceId, pid FROM bt WHERE sent = 0 ORDER BY ts').all() as StoredBt[];
  }

  knownBt(): Set<string> {
    return new Set((this.db.prepare('SELECT name FROM bt').all() as { name: string }[]).map((r) => r.name));
  }

  /** Row counts and the oldest interval's age; zeros when the database cannot be read now. */
  stats(now: number): { rows: number; frames: number; packs: number; btUnsent: number; oldestAgeMs: number } {
    let c: { frames: number; packs: number; bt: number; oldestPack: number | null; oldestFrame: number | null };
    try {
      c = this.st.counts.get() as { frames: number; packs: number; bt: number; oldestPack: number | null; oldestFrame: number | null };
    } catch {
      return { rows: 0, frames: 0, packs: 0, btUnsent: 0, oldestAgeMs: 0 };
    }
    const oldest = Math.min(c.oldestPack ?? Number.POSITIVE_INFINITY, c.oldestFrame ?? Number.POSITIVE_INFINITY);
    return {
      rows: c.frames + c.packs + c.bt,
      frames: c.frames,
      packs: c.packs,
      btUnsent: c.bt,
      oldestAgeMs: Number.isFinite(oldest) ? Math.max(0, now - oldest) : 0,
    };
  }

  synchronous(): number {
    return this.db.pragma('synchronous', { simple: true }) as number;
  }

  /** Commit what is queued (a failure is recorded, not thrown) and close. Safe to call twice. */
  close(): void {
    if (this.closed) return;
    this.commit();
    this.closed = true;
    try {
      this.db.close();
    } catch {
      // closing cannot lose more than the failed commit already did
    }
  }
}
