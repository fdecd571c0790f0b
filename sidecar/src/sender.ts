import type { Pack } from './pack';
import type { Transport } from './transport/transport';

/**
 * Drains queue1 and queue2 into the transport. Weighted round robin (queue1
 * gets `weight` turns for each of queue2's) so a flood of traces never starves
 * metrics, and metrics never starve traces. A pack leaves its queue only when
 * the transport acknowledges it; on failure it goes back to the head and the
 * sender waits until the transport wakes it (it reconnected), so a dead
 * upstream never turns into a busy loop.
 *
 * `step()` is the one re-entrancy-guarded driver: it looks at the queues and the
 * transport and takes the next step.
 */
/** What the sender needs of a queue. */
export interface PackQueue {
  readonly depth: number;
  shift(): Pack | undefined;
  unshift(pack: Pack): void;
}

export class Sender {
  private inFlight = 0;
  /** Metric packs handed to the transport and not yet acked or given back (by pack id). */
  private readonly sendingMetrics = new Set<string>();
  private stepping = false;
  private turn = 0;
  /** A send failed: wait for the transport to call step() again (its wake) before retrying. */
  private backoff = false;

  constructor(
    private readonly queues: [PackQueue, PackQueue],
    private readonly transport: Transport,
    private readonly onSent: (pack: Pack) => void,
    private readonly weight = 4,
  ) {}

  get pending(): number {
    return this.inFlight;
  }

  /** True while the metric pack with this id is with the transport: it may be delivered yet. */
  isSending(packId: string): boolean {
    return this.sendingMetrics.has(packId);
  }

  step = (): void => {
    if (this.stepping) return;
    this.stepping = true;
    this.backoff = false;
    try {
      while (!this.backoff && this.transport.ready && this.inFlight < this.transport.window) {
        const qi = this.pick();
        if (qi < 0) break;
        const q = this.queues[qi] as PackQueue;
        const pack = q.shift() as Pack;
        this.inFlight++;
        if (pack.kind === 'metrics') this.sendingMetrics.add(pack.packId);
        this.transport.send(pack, (err) => {
          this.inFlight--;
          if (pack.kind === 'metrics') this.sendingMetrics.delete(pack.packId);
          if (err === undefined) {
            this.onSent(pack);
            if (!this.stepping) setImmediate(this.step);
          } else {
            q.unshift(pack);
            this.backoff = true;
          }
        });
      }
    } finally {
      this.stepping = false;
    }
  };

  private pick(): number {
    const a = this.queues[0].depth > 0;
    const b = this.queues[1].depth > 0;
    if (!a && !b) return -1;
    if (a && !b) return 0;
    if (b && !a) return 1;
    this.turn = (this.turn + 1) % (this.weight + 1);
    return this.turn === this.weight ? 1 : 0;
  }
}
