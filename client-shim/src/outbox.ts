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
  #items: T[] = [];
  #head = 0;
  bytes = 0;

  readonly #sizeOf: (item: T) => number;

  constructor(sizeOf: (item: T) => number) {
    this.#sizeOf = sizeOf;
  }

  get size(): number {
    return this.#items.length - this.#head;
  }

  at(i: number): T | undefined {
    return this.#items[this.#head + i];
  }

  push(item: T): void {
    this.#items.push(item);
    this.bytes += this.#sizeOf(item);
  }

  peek(): T | undefined {
    return this.#items[this.#head];
  }

  shift(): T | undefined {
    if (this.#head >= this.#items.length) return undefined;
    const item = this.#items[this.#head] as T;
    this.#items[this.#head] = undefined as unknown as T;
    this.#head++;
    this.bytes -= this.#sizeOf(item);
    // Compact once the dead prefix dominates, so shifting stays O(1) amortized.
    if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
    return item;
  }

  clear(): void {
    this.#items = [];
    this.#head = 0;
    this.bytes = 0;
  }
}

export function durableSize(d: DurableFrame): number {
  return d.frame.length;
}

export function bufferSize(b: Buffer): number {
  return b.length;
}

/** What the outbox needs of the connection: the subset of Connection it drives. */
export interface OutboxLink {
  readonly ready: boolean;
  readonly congested: boolean;
  send(frame: Buffer): void;
  hold(on: boolean): void;
}

/**
 * The two queues above, written to the connection in order (durable first),
 * released by the sidecar's cumulative acks, and the flush() waiters those acks settle.
 */
export class Outbox {
  readonly durable = new FrameFifo<DurableFrame>(durableSize);
  /** Durable frames (from the head) already written on the current connection. */
  #durableSent = 0;
  readonly pending = new FrameFifo<Buffer>(bufferSize);
  #waiters: { seq: number; resolve: (ok: boolean) => void; timer: NodeJS.Timeout }[] = [];
  /** Highest seq the sidecar has committed. */
  #ackedSeq = 0;
  sent = 0;
  acked = 0;
  sentSinceFlush = 0;

  readonly #link: OutboxLink;
  /** Bytes both queues may hold together. */
  budget: number;
  readonly #counter: { drop(reason: string): void };
  /** BT names registered: one whose frame is evicted unacked is forgotten, so it may be registered again. */
  readonly #btNames: Set<string>;

  constructor(link: OutboxLink, budget: number, counter: { drop(reason: string): void }, btNames: Set<string>) {
    this.#link = link;
    this.budget = budget;
    this.#counter = counter;
    this.#btNames = btNames;
  }

  /** A new connection: every unacked durable frame is written again. */
  rewind(): void {
    this.#durableSent = 0;
  }

  enqueueDurable(seq: number, frame: Buffer, btName?: string): void {
    this.durable.push(btName === undefined ? { seq, frame } : { seq, frame, btName });
    if (this.#link.ready && this.#durableSent === this.durable.size - 1 && !this.#link.congested) {
      this.write(frame);
      this.#durableSent++;
    }
    this.#enforceBudget();
  }

  /** A best-effort frame: written now if nothing waits before it, else queued. */
  enqueue(frame: Buffer): void {
    if (this.#link.ready && this.pending.size === 0 && !this.#link.congested) {
      this.write(frame);
      return;
    }
    this.pending.push(frame);
    this.#enforceBudget();
  }

  /** Over budget: the oldest best-effort frames go first, then the oldest durable ones. */
  #enforceBudget(): void {
    while (this.durable.bytes + this.pending.bytes > this.budget) {
      if (this.pending.size > 0) {
        this.pending.shift();
      } else {
        const evicted = this.durable.shift();
        if (evicted?.btName !== undefined) this.#btNames.delete(evicted.btName);
        if (this.#durableSent > 0) this.#durableSent--;
      }
      this.#counter.drop('buffer_full');
    }
  }

  write(frame: Buffer): void {
    this.#link.send(frame);
    this.sent++;
    this.sentSinceFlush++;
  }

  /** Write what waits, durable first, until the socket is congested. */
  pump(): void {
    if (!this.#link.ready) return;
    while (this.#durableSent < this.durable.size && !this.#link.congested) {
      this.write((this.durable.at(this.#durableSent) as DurableFrame).frame);
      this.#durableSent++;
    }
    while (this.pending.size > 0 && !this.#link.congested) this.write(this.pending.shift() as Buffer);
  }

  /** The sidecar committed every durable frame up to seq. */
  ack(seq: number): void {
    if (seq > this.#ackedSeq) this.#ackedSeq = seq;
    let head = this.durable.peek();
    while (head !== undefined && head.seq <= seq) {
      this.durable.shift();
      this.acked++;
      if (this.#durableSent > 0) this.#durableSent--;
      head = this.durable.peek();
    }
    if (this.#waiters.length > 0) {
      const still = [];
      for (const w of this.#waiters) {
        if (w.seq <= this.#ackedSeq) {
          clearTimeout(w.timer);
          w.resolve(true);
        } else still.push(w);
      }
      this.#waiters = still;
      if (still.length === 0) this.#link.hold(false);
    }
  }

  /** Resolves true once seq is acked, false after timeoutMs. */
  waitFor(seq: number, timeoutMs: number): Promise<boolean> {
    if (this.#ackedSeq >= seq) return Promise.resolve(true);
    // The app awaits this: the timer (not unref'd) and the socket (held) keep the
    // loop alive until it settles, at most timeoutMs, so the ack can arrive and the
    // code after `await apm.flush()` runs.
    return new Promise((resolve) => {
      const waiter = {
        seq,
        resolve,
        timer: setTimeout(() => {
          this.#waiters = this.#waiters.filter((w) => w !== waiter);
          if (this.#waiters.length === 0) this.#link.hold(false);
          resolve(false);
        }, timeoutMs),
      };
      this.#waiters.push(waiter);
      this.#link.hold(true);
    });
  }

  /** Closing: every waiter learns now whether its seq was acked. */
  settleWaiters(): void {
    for (const w of this.#waiters) {
      clearTimeout(w.timer);
      w.resolve(this.#ackedSeq >= w.seq);
    }
    this.#waiters = [];
  }
}
