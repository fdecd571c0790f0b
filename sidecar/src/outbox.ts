import type { SidecarState } from '@apm-sidecar/proto';
import { encodeMetricPack } from '@apm-sidecar/proto/upstream';
import type { AggPoint, FrameRef } from './aggregator';
import type { Counters } from './counters';
import { EventRing } from './event-ring';
import { dropsQueue2, keepPolicy } from './link/keep-policy';
import type { Logger } from './logger';
import { COUNTER_OF, type Pack } from './pack';
import { BoundedQueue } from './queue';
import { Queue1 } from './queue1';
import type { RetentionHolder } from './retention/holder';
import type { StoredPack } from './retention/store';

export interface OutboxOptions {
  agentId: string;
  metricIntervalMs: number;
  queue1Size: number;
  queue2Size: number;
  retentionMs: number;
  eventReplayWindowMs: number;
  retention: RetentionHolder;
  counters: Counters;
  log: Logger;
  /** Something was queued: let the sender look. */
  wake: () => void;
}

/** Metric points per pack: a closed interval is cut into packs of at most this many. */
const PER_PACK = 2000;

/**
 * What waits to go upstream: queue1 (registrations, metric packs, events), queue2 (traces,
 * active stacks) and the ring of events kept while the upstream is away. Packs are placed by
 * the keep policy for the current state (DESIGN §6); a state change moves them as it says.
 */
export class Outbox {
  readonly queue1: Queue1;
  readonly queue2: BoundedQueue<Pack>;
  readonly ring: EventRing;
  private packSeq = 0;
  private readonly bootId = `${Date.now().toString(36)}${process.pid.toString(36)}`;

  constructor(private readonly opts: OutboxOptions) {
    const { counters, log } = opts;
    const dropEpisode = (q: { name: string; capacity: number }, phase: 'start' | 'end', total: number) => {
      if (phase === 'start') log.warn({ queue: q.name, capacity: q.capacity }, `${q.name} is full: dropping the oldest packs`);
      else log.warn({ queue: q.name, dropped: total }, `${q.name} has room again after dropping ${total} packs`);
    };
    const retention = opts.retention;
    this.queue1 = new Queue1(
      opts.queue1Size,
      (pack, reason) => counters.drop(reason, pack.kind === 'metrics' ? pack.points : 1),
      (phase, total) => dropEpisode({ name: 'queue1', capacity: opts.queue1Size }, phase, total),
      {
        // Only a retention whose commits succeed holds what leaves memory.
        holds: () => retention.store !== null && !retention.store.condition.failing,
        load: (limit, skip) => retention.store?.packsInOrder(limit, skip)?.map((p): Pack => ({ kind: 'metrics', ...p })) ?? null,
        episode: (phase, packs) => {
          if (phase === 'start') log.warn({ queue: 'queue1', capacity: opts.queue1Size }, 'queue1 is full: newer metric packs wait in the retention only');
          else log.info({ queue: 'queue1', packs }, `queue1 has taken back the ${packs} metric packs that waited in the retention only`);
        },
      },
    );
    this.queue2 = new BoundedQueue<Pack>('queue2', opts.queue2Size, dropEpisode);
    this.ring = new EventRing(opts.eventReplayWindowMs, 10_000, (n, reason) => counters.drop(reason, n));
  }

  /** Traces, active stacks, events and snapshots go where the keep policy says for the state (DESIGN §6). */
  keep(pack: Pack, state: SidecarState): void {
    const keep = keepPolicy(pack.kind, state);
    if (keep === 'queue2') this.enqueue2(pack);
    else if (keep === 'queue1') this.queue1.push(pack);
    else if (keep === 'ring') this.ring.push(pack, Date.now());
    else this.opts.counters.drop(keep.drop);
  }

  /** A closed interval becomes packs: queued, and in the retention in place of the raw frames folded into it. */
  emitMetrics(intervalStart: number, points: AggPoint[], frames: FrameRef[]): void {
    const { agentId, metricIntervalMs: intervalMs } = this.opts;
    const stored: StoredPack[] = [];
    for (let i = 0; i < points.length; i += PER_PACK) {
      const packId = `${agentId}:${this.bootId}:${++this.packSeq}`;
      const chunk = points.slice(i, i + PER_PACK);
      const body = encodeMetricPack({ packId, intervalStart, intervalMs, points: chunk });
      stored.push({ packId, intervalStart, intervalMs, body, points: chunk.length });
      // Only the encoded form is kept: it is what goes upstream and into the retention.
      this.queue1.push({ kind: 'metrics', packId, intervalStart, intervalMs, points: chunk.length, body });
    }
    // The interval's raw frames are replaced by its packs in one transaction.
    this.opts.retention.store?.sealInterval(stored, frames);
  }

  /** The collector acked a pack: counted as sent, and no longer retained. */
  sent(pack: Pack): void {
    const { counters, retention } = this.opts;
    counters.sent[COUNTER_OF[pack.kind]] += pack.kind === 'metrics' ? pack.points : 1;
    if (pack.kind === 'metrics') retention.store?.packAcked(pack.packId);
    else if (pack.kind === 'btRegistration') retention.store?.btAcked(pack.name);
  }

  stateChanged(to: SidecarState, from: SidecarState): void {
    if (dropsQueue2(to)) {
      // No transaction detection from here on: what traces wait are dropped (DESIGN §6).
      const n = this.queue2.clear();
      if (n > 0) this.opts.counters.drop(to, n);
    }
    if (from === 'active' && to !== 'active') {
      // Events not yet acked (in flight at the loss, or queued) wait in the ring like new ones:
      // on return only those of the last event_replay_window_ms are posted.
      for (const p of this.queue1.takeEvents()) this.ring.push(p, p.kind === 'event' ? p.event.ts : p.kind === 'snapshot' ? p.snapshot.ts : Date.now());
    }
    if (to === 'active' && from !== 'active') {
      // Replay order: registrations, then metrics (queue1's lanes), then the events of the last window.
      for (const p of this.ring.take(Date.now())) this.queue1.push(p);
      this.opts.wake();
    }
  }

  /** Metrics older than retention_ms are dropped (memory and SQLite) and counted `expired`. */
  purge(now: number): void {
    const { retentionMs, retention, counters, log } = this.opts;
    const cutoff = now - retentionMs;
    // The retention first: queue1 tops its metrics lane up from it as packs leave memory, and
    // must find only packs within retention_ms there. On failure the rows stay and the next
    // purge drops them; the condition is already reported.
    const purged = retention.store?.purge(cutoff, now - 7 * 24 * 3600 * 1000);
    const expired = new Map<string, number>();
    for (const p of this.queue1.expireMetrics(cutoff)) if (p.kind === 'metrics') expired.set(p.packId, p.points);
    // Spilled packs expire in the retention only; a pack with the transport may still be delivered.
    for (const [id, n] of purged?.packs ?? []) if (!this.queue1.isSending(id)) expired.set(id, n);
    let points = 0;
    for (const n of expired.values()) points += n;
    if (points > 0) {
      counters.drop('expired', points);
      log.warn({ points, retentionMs }, `dropped ${points} metric points older than retention_ms`);
    }
    this.ring.expire(now);
  }

  /** Retained packs dropped for space: they leave queue1 too, counted `disk_full`. */
  dropForSpace(packIds: Set<string>, points: number): void {
    this.queue1.removeMetricPacks((p) => packIds.has(p.packId));
    this.opts.counters.drop('disk_full', points);
  }

  private enqueue2(pack: Pack): void {
    const q = this.queue2;
    const before = q.dropped;
    q.push(pack);
    if (q.dropped > before) this.opts.counters.drop(`${q.name}_full`, q.dropped - before);
  }
}
