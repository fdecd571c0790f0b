import type { Pack } from './pack';

/**
 * Events and snapshots collected while the upstream is away. Only the last
 * `windowMs` are kept (event_replay_window_ms, 20 s): on return they are
 * posted after registrations and metrics; older ones are dropped and counted.
 * Also bounded in count, so a burst cannot grow it without limit.
 */
export class EventRing {
  private items: { at: number; pack: Pack }[] = [];

  constructor(
    private readonly windowMs: number,
    private readonly maxItems: number,
    private readonly onDrop: (n: number, reason: string) => void,
  ) {}

  get size(): number {
    return this.items.length;
  }

  push(pack: Pack, now: number): void {
    this.items.push({ at: now, pack });
    if (this.items.length > this.maxItems) {
      this.items.shift();
      this.onDrop(1, 'event_ring_full');
    }
    if ((this.items.length & 63) === 0) this.expire(now);
  }

  /** Drop what is older than the window. */
  expire(now: number): void {
    const cutoff = now - this.windowMs;
    let i = 0;
    while (i < this.items.length && (this.items[i] as { at: number }).at < cutoff) i++;
    if (i > 0) {
      this.items = this.items.slice(i);
      this.onDrop(i, 'event_window');
    }
  }

  /** Everything of the last window, oldest first; the ring is emptied. */
  take(now: number): Pack[] {
    this.expire(now);
    const out = this.items.map((x) => x.pack);
    this.items = [];
    return out;
  }
}
