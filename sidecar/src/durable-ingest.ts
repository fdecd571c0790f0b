import type { BtRegistration, Hello, MetricsMessage } from '@apm-sidecar/proto';
import type { Aggregator } from './aggregator';
import type { Counters } from './counters';
import type { SeqTracker } from './dedup';
import type { Origin } from './pack';
import type { Queue1 } from './queue1';
import type { RetentionHolder } from './retention/holder';
import { RetentionUnavailableError, type RetentionStore, type StoredFrame } from './retention/store';
import type { ShimSession } from './shim-session';

export interface DurableIngestOptions {
  seqs: SeqTracker;
  retention: RetentionHolder;
  aggregator: Aggregator;
  queue1: Queue1;
  counters: Counters;
  /** Registrations already persisted (de-duplication by name); filled by recovery too. */
  knownBt: Set<string>;
  /** Something was queued: let the sender look. */
  wake: () => void;
}

type Write = (store: RetentionStore, done: (err: Error | null) => void) => void;

/**
 * The durable kinds, metrics and business-transaction registrations (DESIGN §3):
 * de-duplicated by (instance id, seq), then retained, then applied and acked.
 *
 *   frame ─ seq seen? ── yes ─> ack the last seq, count a duplicate
 *             │ no
 *             └─> commit to the retention ─ failed / closed ─> ERR_RETENTION_UNAVAILABLE, close
 *                                           │ ok
 *                                           └─> apply (aggregate / queue) once, ack seq
 */
export class DurableIngest {
  constructor(private readonly opts: DurableIngestOptions) {}

  metrics(session: ShimSession, instanceId: string, m: MetricsMessage, payload: Buffer): void {
    const o = this.opts;
    if (this.duplicate(session, instanceId, m.seq)) return;
    const frame: StoredFrame = { instanceId, seq: m.seq, intervalStart: o.aggregator.intervalOf(m.ts), payload: Buffer.from(payload) };
    this.commit(
      session,
      m.seq,
      (store, done) => store.addFrame(frame, done),
      () => {
        o.counters.received.metrics += m.points.length;
        const overflowBefore = o.aggregator.droppedOverflow;
        const dropped = o.aggregator.add(m, { instanceId, seq: m.seq });
        if (dropped > 0) o.counters.drop('series_limit', dropped);
        if (o.aggregator.droppedOverflow > overflowBefore) o.counters.drop('overflow', o.aggregator.droppedOverflow - overflowBefore);
      },
    );
  }

  btRegistration(session: ShimSession, origin: Origin, b: BtRegistration): void {
    const o = this.opts;
    if (this.duplicate(session, origin.instanceId, b.seq)) return;
    this.commit(
      session,
      b.seq,
      (store, done) => store.addBt({ name: b.name, ts: b.ts, app: origin.app, instanceId: origin.instanceId, pid: origin.pid }, b.seq, done),
      () => {
        if (o.knownBt.has(b.name)) return;
        o.knownBt.add(b.name);
        o.counters.received.btRegistrations++;
        o.queue1.push({ kind: 'btRegistration', origin, name: b.name, ts: b.ts });
        o.wake();
      },
    );
  }

  /** A seq already committed: acked again (cumulatively) and counted, not applied. */
  private duplicate(session: ShimSession, instanceId: string, seq: number): boolean {
    const { seqs, counters } = this.opts;
    if (seqs.isNew(instanceId, seq)) return false;
    counters.duplicates++;
    session.ack(seqs.last(instanceId));
    return true;
  }

  /**
   * Written to the retention first; only once the commit succeeded is the frame applied and
   * acked. When the commit fails, or there is no open retention, nothing is applied and the
   * connection is closed with ERR_RETENTION_UNAVAILABLE: the shim keeps the frame and every
   * later one (acks are cumulative, so none may be acked past a hole) and resends them after
   * it reconnects.
   */
  private commit(session: ShimSession, seq: number, write: Write, apply: () => void): void {
    const { retention, seqs, counters } = this.opts;
    const store = retention.store;
    if (store === null) {
      this.refuse(session, retention.closedWhy ?? 'the retention is closed');
      return;
    }
    write(store, (err) => {
      if (err !== null) {
        this.refuse(session, err.message);
        return;
      }
      const instanceId = (session.hello as Hello).instanceId;
      // A copy of this seq may have been committed meanwhile (a resend on a new connection): apply it once.
      if (seqs.isNew(instanceId, seq)) {
        seqs.commit(instanceId, seq);
        apply();
      } else counters.duplicates++;
      session.ack(seq);
    });
  }

  private refuse(session: ShimSession, why: string): void {
    this.opts.counters.retentionRefused++;
    session.fail(new RetentionUnavailableError(`durable frame not committed (${why}); resend it later`));
  }
}
