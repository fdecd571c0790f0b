import type { Pack } from './pack';

type Lane = 'bt' | 'metrics' | 'events';

/**
 * queue1: performance data sent on a schedule, in three lanes drained in
 * priority order, which is also the replay order after an outage:
 *
 *   bt (registrations) → metrics (closed intervals) → events (events, snapshots)
 *
 * Bounded by `capacity` packs. When full, the oldest event goes first (an
 * incoming event never displaces a metric pack: it is dropped itself);
 * registrations are never dropped here (they are persisted and bounded by name).
 * A metric pack that finds no room is not dropped while the retention holds it
 * (DESIGN §6: every metric younger than retention_ms is kept): it stays in the
 * retention only — the queue has *spilled* — and from then on the retention is
 * the metrics lane's tail, loaded back oldest first as the lane drains:
 *
 *   memory:    [m1 m2 … m8]        ← sent first
 *   retention: m1 … m8 m9 m10 …    ← m9 on, loaded into memory when it drains
 *
 * Only without a retention that takes writes is the oldest metric pack dropped
 * for room (`queue1_full`). Metric packs also leave when they age past retention.
 */

/** Where spilled metric packs wait: the retention. */
export interface SpillStore {
  /** True when metric packs are committed durably now, so one may leave memory and come back. */
  holds(): boolean;
  /** Up to `limit` retained metric packs, oldest first, skipping those `skip` names; null when it cannot be read now. */
  load(limit: number, skip: (packId: string) => boolean): Pack[] | null;
  /** Told once when a spill starts and once, with the packs it spilled, when it ends. */
  episode?(phase: 'start' | 'end', packs: number): void;
}
export class Queue1 {
  readonly name = 'queue1';
  private readonly lanes: Record<Lane, Pack[]> = { bt: [], metrics: [], events: [] };
  dropped = 0;
  dropsInEpisode = 0;
  /** The retention holds metric packs that are not in memory (see above). */
  spilled = false;
  /** Metric packs that went to the retention only for want of room. */
  spills = 0;
  private spillsInEpisode = 0;
  /** True for a metric pack with the transport (not in memory, still retained): not loaded back. */
  isSending: (packId: string) => boolean = () => false;

  constructor(
    readonly capacity: number,
    private readonly onDrop: (pack: Pack, reason: string) => void,
    private readonly onDropEpisode: (phase: 'start' | 'end', total: number) => void = () => {},
    private readonly store: SpillStore | null = null,
  ) {}

  get depth(): number {
    return this.lanes.bt.length + this.lanes.metrics.length + this.lanes.events.length;
  }

  laneDepths(): Record<Lane, number> {
    return { bt: this.lanes.bt.length, metrics: this.lanes.metrics.length, events: this.lanes.events.length };
  }

  push(pack: Pack): void {
    // Once spilled, newer metric packs queue behind the spilled ones, in the retention.
    if (pack.kind === 'metrics' && this.spilled && this.spill()) return;
    if (this.depth >= this.capacity && pack.kind !== 'btRegistration') {
      // An event never pushes out a metric pack: with no older event to drop, the new one goes.
      const event = this.lanes.events.shift();
      if (event === undefined && pack.kind === 'metrics' && this.spill()) return;
      const victim = event ?? (pack.kind === 'metrics' ? this.lanes.metrics.shift() : undefined);
      if (victim === undefined) {
        // Only registrations in the queue: the new pack is the one that cannot fit.
        this.drop(pack);
        return;
      }
      this.drop(victim);
    } else if (this.dropsInEpisode > 0 && this.depth <= this.capacity >> 1) {
      this.onDropEpisode('end', this.dropsInEpisode);
      this.dropsInEpisode = 0;
    }
    this.lanes[laneOf(pack)].push(pack);
  }

  shift(): Pack | undefined {
    this.topUp();
    return this.lanes.bt.shift() ?? this.lanes.metrics.shift() ?? this.lanes.events.shift();
  }

  /** Leave a metric pack in the retention only, when it holds it; false when it cannot. */
  private spill(): boolean {
    if (this.store === null || !this.store.holds()) return false;
    if (!this.spilled) {
      this.spilled = true;
      this.spillsInEpisode = 0;
      this.store.episode?.('start', 0);
    }
    this.spills++;
    this.spillsInEpisode++;
    return true;
  }

  /**
   * While spilled, the metrics lane is kept at least half full from the retention, so it is never
   * empty with packs waiting there (the sender looks at `depth` before it shifts).
   */
  private topUp(): void {
    if (this.spilled && this.lanes.metrics.length <= this.capacity >> 1) this.loadSpilled();
  }

  /** Fill the metrics lane back up from the retention, oldest first; the spill ends when it runs dry. */
  private loadSpilled(): void {
    const inMemory = new Set<string>();
    for (const p of this.lanes.metrics) if (p.kind === 'metrics') inMemory.add(p.packId);
    const limit = Math.max(1, this.capacity - this.depth);
    const got = (this.store as SpillStore).load(limit, (id) => inMemory.has(id) || this.isSending(id));
    // Unreadable now: the next shift tries again.
    if (got === null) return;
    this.lanes.metrics.push(...got);
    if (got.length < limit) {
      this.spilled = false;
      (this.store as SpillStore).episode?.('end', this.spillsInEpisode);
    }
  }

  /** Put a pack that failed to send back at the head of its lane. */
  unshift(pack: Pack): void {
    this.lanes[laneOf(pack)].unshift(pack);
  }

  /** Take the events lane (the upstream went away: they go back to the replay ring). */
  takeEvents(): Pack[] {
    const out = this.lanes.events;
    this.lanes.events = [];
    return out;
  }

  /** Remove metric packs of intervals that started before `cutoff`; returns them. */
  expireMetrics(cutoff: number): Pack[] {
    const keep: Pack[] = [];
    const gone: Pack[] = [];
    for (const p of this.lanes.metrics) (p.kind === 'metrics' && p.intervalStart < cutoff ? gone : keep).push(p);
    this.lanes.metrics = keep;
    this.topUp();
    return gone;
  }

  /** Remove the metric packs `which` selects (dropped from the retention for space); returns how many. */
  removeMetricPacks(which: (p: Extract<Pack, { kind: 'metrics' }>) => boolean): number {
    const before = this.lanes.metrics.length;
    this.lanes.metrics = this.lanes.metrics.filter((p) => p.kind !== 'metrics' || !which(p));
    this.topUp();
    return before - this.lanes.metrics.length;
  }

  private drop(pack: Pack): void {
    this.dropped++;
    if (this.dropsInEpisode++ === 0) this.onDropEpisode('start', 0);
    this.onDrop(pack, 'queue1_full');
  }
}

function laneOf(p: Pack): Lane {
  return p.kind === 'btRegistration' ? 'bt' : p.kind === 'metrics' ? 'metrics' : 'events';
}
