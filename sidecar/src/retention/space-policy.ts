import type { Logger } from '../logger';
import { filesystemFreeBytes, lowWater, spaceVerdict } from './space';
import type { RetentionStore, SpaceUsage } from './store';

export interface SpacePolicyOptions {
  dataDir: string;
  maxBytes: number;
  minFreeBytes: number;
  log: Logger;
  /** Packs on the wire now: not dropped (their ack would find nothing to delete). */
  isSending: (packId: string) => boolean;
  /** Retained packs dropped for space: take them out of memory too and count them `disk_full`. */
  dropped: (packIds: Set<string>, points: number) => void;
  /** An episode ends only after this long without a drop, so steady pressure is one episode, not many (default 5000). */
  episodeQuietMs?: number;
}

/** Near a bound: within twice the free-space bound, or past 80% of the size bound. */
function nearBound(usage: SpaceUsage, freeBytes: number | null, maxBytes: number, minFreeBytes: number): boolean {
  const nearMax = maxBytes > 0 && usage.usedBytes > 0.8 * maxBytes;
  const nearFree = minFreeBytes > 0 && freeBytes !== null && freeBytes + usage.freelistBytes < 2 * minFreeBytes;
  return nearMax || nearFree;
}

/**
 * The retention's space bounds (DESIGN §8): beyond retention_max_bytes, or below
 * retention_min_free_bytes free on its filesystem, the oldest retained metrics are dropped
 * (`disk_full`) down to the low-water mark. Logged once when dropping starts and once, with
 * the total, when the retention is within its bounds again.
 */
export class SpacePolicy {
  /** Last measurement (every second), for status and /metrics. */
  usage: SpaceUsage | null = null;
  freeBytes: number | null = null;
  overLimit: 'max_bytes' | 'min_free' | null = null;
  /**
   * Near a bound at the last measurement: the caller then measures on every tick instead of every
   * second, so a burst of writes cannot cross the bound between two measurements.
   */
  near = false;
  private droppedInEpisode = 0;
  private lastDropAt = Number.NEGATIVE_INFINITY;

  constructor(private readonly opts: SpacePolicyOptions) {}

  enforce(store: RetentionStore, now: number = Date.now()): void {
    const { log, dataDir } = this.opts;
    const usage = store.usage();
    const freeBytes = filesystemFreeBytes(dataDir);
    this.usage = usage;
    this.freeBytes = freeBytes;
    if (usage === null) return;
    const limits = { maxBytes: this.opts.maxBytes, minFreeBytes: this.opts.minFreeBytes };
    this.near = nearBound(usage, freeBytes, limits.maxBytes, limits.minFreeBytes);
    const high = spaceVerdict(usage, freeBytes, limits);
    const low = spaceVerdict(usage, freeBytes, lowWater(limits));
    if (high.reason === null) {
      const quiet = now - this.lastDropAt >= (this.opts.episodeQuietMs ?? 5000);
      if (this.overLimit !== null && low.reason === null && quiet) {
        log.warn(
          { dropped: this.droppedInEpisode, usedBytes: usage.usedBytes, freeBytes },
          `retention within its space bounds again after dropping ${this.droppedInEpisode} metric points (disk_full)`,
        );
        this.overLimit = null;
        this.droppedInEpisode = 0;
      }
      return;
    }
    if (this.overLimit === null) {
      log.warn(
        { reason: high.reason, usedBytes: usage.usedBytes, freeBytes, maxBytes: limits.maxBytes, minFreeBytes: limits.minFreeBytes },
        `retention beyond its space bounds (${high.reason}): dropping the oldest retained metrics (disk_full)`,
      );
    }
    this.overLimit = high.reason;
    // Pack bodies understate the pages they take: drop, measure again, until below the low-water
    // mark. Each round also empties the WAL into the pages just freed, so the filesystem gets back
    // what the WAL held.
    let excess = low.excessBytes;
    for (let i = 0; i < 64 && excess > 0; i++) {
      const r = store.dropOldest(excess, this.opts.isSending);
      if (r === null) return;
      if (r.packIds.length > 0) {
        this.opts.dropped(new Set(r.packIds), r.points);
        this.droppedInEpisode += r.points;
        this.lastDropAt = now;
      }
      if (high.reason === 'min_free') store.checkpoint();
      const after = store.usage();
      if (after === null) return;
      const free = filesystemFreeBytes(dataDir);
      this.usage = after;
      this.freeBytes = free;
      excess = spaceVerdict(after, free, lowWater(limits)).excessBytes;
      if (r.packIds.length === 0) return; // nothing left to drop: open intervals' frames are kept
    }
  }
}
