/**
 * Highest committed durable seq per shim instance, for de-duplication by
 * (instance id, seq) and for the cumulative ack. Bounded: past `max`
 * instances, the least recently seen is forgotten (a forgotten instance that
 * comes back is simply accepted from its next seq on).
 */
export class SeqTracker {
  private readonly seen = new Map<string, number>();

  constructor(private readonly max = 10000) {}

  get size(): number {
    return this.seen.size;
  }

  last(instanceId: string): number {
    return this.seen.get(instanceId) ?? 0;
  }

  /** True when seq is new for this instance (then it must be committed and recorded). */
  isNew(instanceId: string, seq: number): boolean {
    return seq > (this.seen.get(instanceId) ?? 0);
  }

  commit(instanceId: string, seq: number): void {
    // Delete then set keeps Map order = recency, so eviction takes the oldest.
    this.seen.delete(instanceId);
    this.seen.set(instanceId, seq);
    if (this.seen.size > this.max) {
      const oldest = this.seen.keys().next().value;
      if (oldest !== undefined) this.seen.delete(oldest);
    }
  }
}
