/**
 * What the shim holds for the sidecar, bounded in bytes.
 *
 *   durable  [ acked… | written, unacked … | not yet written … ]   metrics, BT registrations
 *              ^ dropped on ack            ^ sentIdx
 *   pending  [ best-effort frames waiting for a connection or for the socket to drain ]
 *
 * Durable frames stay until the sidecar acks them (cumulative seq) and are
 * written again after a reconnect. Best-effort frames are written once. When a
 * bound is hit the oldest frame goes and the drop is counted by reason.
 */
export interface DurableFrame {
  seq: number;
  frame: Buffer;
  /** Business-transaction registrations: the name, forgotten if the frame is evicted so it can be registered again. */
  btName?: string;
}

export class FrameFifo<T> {
  private items: T[] = [];
  private head = 0;
  bytes = 0;

  constructor(private readonly sizeOf: (item: T) => number) {}

  get size(): number {
    return this.items.length - this.head;
  }

  at(i: number): T | undefined {
    return this.items[this.head + i];
  }

  push(item: T): void {
    this.items.push(item);
    this.bytes += this.sizeOf(item);
  }

  peek(): T | undefined {
    return this.items[this.head];
  }

  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const item = this.items[this.head] as T;
    this.items[this.head] = undefined as unknown as T;
    this.head++;
    this.bytes -= this.sizeOf(item);
    // Compact once the dead prefix dominates, so shifting stays O(1) amortized.
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }

  clear(): void {
    this.items = [];
    this.head = 0;
    this.bytes = 0;
  }
}

export function durableSize(d: DurableFrame): number {
  return d.frame.length;
}

export function bufferSize(b: Buffer): number {
  return b.length;
}
