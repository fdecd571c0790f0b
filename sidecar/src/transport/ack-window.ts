import { AckGapError } from '@apm-sidecar/proto/upstream';
import type { Done } from './batcher';

interface InFlight {
  readonly counter: number;
  readonly dones: Done[];
  readonly bytes: number;
}

/**
 * The frames sent and not yet acked, oldest first. The collector stores and acks in order, so
 * an ack covers exactly the oldest frame; any other counter means a frame was not stored.
 */
export class AckWindow {
  private frames: InFlight[] = [];
  private bytes = 0;

  get length(): number {
    return this.frames.length;
  }

  get unackedBytes(): number {
    return this.bytes;
  }

  track(counter: number, dones: Done[], bytes: number): void {
    this.frames.push({ counter, dones, bytes });
    this.bytes += bytes;
  }

  /** The dones of the acked frame, or the typed error that ends the session (ERR_ACK_GAP). */
  ack(counter: number): Done[] | AckGapError {
    const head = this.frames[0];
    if (head === undefined || head.counter !== counter) return new AckGapError(counter, head?.counter ?? null);
    this.frames.shift();
    this.bytes -= head.bytes;
    return head.dones;
  }

  /** Forget every frame; their dones, oldest first. */
  takeDones(): Done[] {
    const all = this.frames.flatMap((f) => f.dones);
    this.frames = [];
    this.bytes = 0;
    return all;
  }
}
