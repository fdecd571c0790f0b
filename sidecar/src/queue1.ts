import type { Pack } from './pack';

type Lane = 'bt' | 'metrics' | 'events';

/**
 * queue1: performance data sent on a schedule, in three lanes drained in
 * priority order, which is also the replay order after an outage:
 *
 *   bt (registrations) → metrics (closed intervals) → events (events, snapshots)
 *
 * Bounded by `capacity` packs. When full, the oldest event goes first, then the
 * oldest metric pack (an incoming event never displaces a metric pack: it is
 * dropped itself); registrations are never dropped here (they are persisted
 * and bounded by name). Metric packs also leave when they age past retention.
 */
export class Queue1 {
  readonly name = 'queue1';
  private readonly lanes: Record<Lane, Pack[]> = { bt: [], metrics: [], events: [] };
  dropped = 0;
  dropsInEpisode = 0;

  constructor(
    readonly capacity: number,
    private readonly onDrop: (pack: Pack, reason: string) => void,
    private readonly onDropEpisode: (phase: 'start' | 'end', total: number) => void = () => {},
  ) {}

  get depth(): number {
    return this.lanes.bt.length + this.lanes.metrics.length + this.lanes.events.length;
  }

  laneDepths(): Record<Lane, number> {
    return { bt: this.lanes.bt.length, metrics: this.lanes.metrics.length, events: this.lanes.events.length };
  }

  push(pack: Pack): void {
    if (this.depth >= this.capacity && pack.kind !== 'btRegistration') {
      // An event never pushes out a metric pack: with no older event to drop, the new one goes.
      const victim = pack.kind === 'metrics' ? (this.lanes.events.shift() ?? this.lanes.metrics.shift()) : this.lanes.events.shift();
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
    return this.lanes.bt.shift() ?? this.lanes.metrics.shift() ?? this.lanes.events.shift();
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
    return gone;
  }

  /** Remove the metric packs `which` selects (dropped from the retention for space); returns how many. */
  removeMetricPacks(which: (p: Extract<Pack, { kind: 'metrics' }>) => boolean): number {
    const before = this.lanes.metrics.length;
    this.lanes.metrics = this.lanes.metrics.filter((p) => p.kind !== 'metrics' || !which(p));
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
