import { createWriteStream } from 'node:fs';
import type { Writable } from 'node:stream';
import { Link, NO_UPSTREAM } from '../link/link';
import { type Pack, packToJson } from '../pack';
import type { Transport, TransportContext } from './transport';

/**
 * `transport = debug`: no network; every pack is printed as one JSON line to
 * `debug_output` ('-' = stdout, or a file path). A pack counts as delivered once
 * the stream has taken it; stream backpressure holds the sender.
 */
export class DebugTransport implements Transport {
  readonly name = 'debug';
  readonly window = 64;
  private readonly out: Writable;
  private readonly ownsStream: boolean;
  private waiting = false;
  private wake: () => void = () => {};

  constructor(
    private readonly agentId: string,
    output: string,
  ) {
    if (output === '-' || output === '') {
      this.out = process.stdout;
      this.ownsStream = false;
    } else {
      // A large buffer: the sender hands over many packs per turn of the loop.
      this.out = createWriteStream(output, { flags: 'a', highWaterMark: 1024 * 1024 });
      this.ownsStream = true;
    }
  }

  get ready(): boolean {
    return !this.waiting;
  }

  start(ctx: TransportContext): void {
    this.wake = ctx.wake;
    // No upstream to wait for: active at once, through the Link like any other transport.
    new Link(ctx.state, ctx.log, NO_UPSTREAM).up('transport debug needs no upstream');
  }

  reconnect(): { ok: boolean; message: string } {
    return { ok: false, message: 'transport debug has no upstream to reconnect' };
  }

  status(): Record<string, unknown> {
    return { transport: 'debug', output: this.out === process.stdout ? 'stdout' : 'file' };
  }

  readiness(): { ready: boolean; reason: string } {
    return { ready: true, reason: 'transport debug' };
  }

  send(pack: Pack, done: (err?: Error) => void): void {
    const line = `${JSON.stringify(packToJson(this.agentId, pack))}\n`;
    const ok = this.out.write(line);
    done();
    if (!ok && !this.waiting) {
      this.waiting = true;
      this.out.once('drain', () => {
        this.waiting = false;
        this.wake();
      });
    }
  }

  close(): Promise<void> {
    if (!this.ownsStream) return Promise.resolve();
    return new Promise((resolve) => this.out.end(resolve));
  }
}
