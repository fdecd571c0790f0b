/**
 * A bounded FIFO of packs. When full, the oldest item is dropped and counted
 * (the newest data is the most useful to a monitoring user); the owner logs
 * once when dropping starts and once with the total when it stops (when a push
 * finds the queue drained to half its capacity).
 *
 *   push → [ tail … head ] → shift
 */
export class BoundedQueue<T> {
  private items: (T | undefined)[] = [];
  private head = 0;
  dropped = 0;
  /** Drops since the queue last had room (for log-once reporting). */
  dropsInEpisode = 0;

  constructor(
    readonly name: string,
    readonly capacity: number,
    private readonly onDropEpisode: (q: BoundedQueue<T>, phase: 'start' | 'end', total: number) => void = () => {},
  ) {}

  get depth(): number {
    return this.items.length - this.head;
  }

  push(item: T): void {
    if (this.depth >= this.capacity) {
      this.shift();
      this.dropped++;
      if (this.dropsInEpisode++ === 0) this.onDropEpisode(this, 'start', 0);
    } else if (this.dropsInEpisode > 0 && this.depth <= this.capacity >> 1) {
      // Hysteresis: the episode ends only once the queue has drained to half,
      // so a queue hovering at its bound does not log on every push.
      this.onDropEpisode(this, 'end', this.dropsInEpisode);
      this.dropsInEpisode = 0;
    }
    this.items.push(item);
  }

  peek(): T | undefined {
    return this.items[this.head];
  }

  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const item = this.items[this.head];
    this.items[this.head++] = undefined;
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }

  /** Put an item back at the head (a send that failed); it was counted in the queue before. */
  unshift(item: T): void {
    if (this.head > 0) this.items[--this.head] = item;
    else this.items.unshift(item);
  }

  /** Drop everything (counted), e.g. queue2 on entering standby. */
  clear(): number {
    const n = this.depth;
    this.items = [];
    this.head = 0;
    this.dropped += n;
    return n;
  }
}
