import type { EventPack } from '@apm-sidecar/proto';
import type { Aggregator } from './aggregator';
import type { Counters } from './counters';
import type { SeqTracker } from './dedup';
import { type DogStatsdCounts, DogStatsdAggregator, encodeDogStatsdMetrics } from './dogstatsd';
import { type DogStatsdListeners, listenDogStatsd } from './dogstatsd-listeners';
import type { Logger } from './logger';
import type { RetentionHolder } from './retention/holder';

/** The pseudo shim instance DogStatsD input is retained and de-duplicated under. */
export const DOGSTATSD_INSTANCE = 'dogstatsd';

export interface DogStatsdInputOptions {
  /** UDP host:port, and a Unix datagram socket path; null / '' = off (DESIGN §8). */
  udp: { host: string; port: number } | null;
  socketPath: string;
  flushMs: number;
  /** `max_series`: the bound on the series of one flush window too. */
  maxSeries: number;
  seqs: SeqTracker;
  aggregator: Aggregator;
  retention: RetentionHolder;
  counters: Counters;
  log: Logger;
  /** An event or service check, kept like a shim's event. */
  onEvent: (event: EventPack) => void;
}

export type DogStatsdStatus = (DogStatsdCounts & { udpPort: number | null; socket: string | null }) | null;

/**
 * DogStatsD lines into the same aggregation as the shims' metrics: every flush_ms the window
 * becomes one metrics message under the pseudo instance `dogstatsd`, aggregated and retained.
 */
export class DogStatsdInput {
  private agg: DogStatsdAggregator | null = null;
  private listeners: DogStatsdListeners | null = null;
  private timer: NodeJS.Timeout | null = null;
  private seq = 0;

  constructor(private readonly opts: DogStatsdInputOptions) {}

  async start(): Promise<void> {
    const o = this.opts;
    if (o.udp === null && o.socketPath.length === 0) return;
    const agg = new DogStatsdAggregator({
      maxSeries: o.maxSeries,
      intervalOf: (ts) => o.aggregator.intervalOf(ts),
      onEvent: o.onEvent,
      // Once per reason: a client sending a bad line sends it again and again (the rest are counted).
      onFirstInvalid: (reason, line) =>
        o.log.warn(
          { dogstatsd: { reason, line: line.slice(0, 200) } },
          `DogStatsD line refused (${reason}); further ones are counted in status dogstatsd.invalidByReason`,
        ),
    });
    this.agg = agg;
    this.seq = o.seqs.last(DOGSTATSD_INSTANCE);
    this.listeners = await listenDogStatsd({ udp: o.udp, socketPath: o.socketPath, onPacket: (b) => agg.packet(b), log: o.log });
    this.timer = setInterval(() => this.flush(), o.flushMs);
  }

  /** Stop listening; with `flush` (a clean shutdown) the open window is flushed last. */
  stop(flush: boolean): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.listeners?.close();
    if (flush) this.flush();
  }

  status(): DogStatsdStatus {
    if (this.agg === null) return null;
    return { ...this.agg.counts, udpPort: this.listeners?.udpPort ?? null, socket: this.opts.socketPath || null };
  }

  /** The window becomes one metrics message, handled like a shim's flush (retained, then aggregated). */
  private flush(): void {
    const { agg, opts: o } = this;
    if (agg === null) return;
    // After a late opening of the retention, the seqs it held come first.
    for (const msg of agg.take(Math.max(this.seq, o.seqs.last(DOGSTATSD_INSTANCE)) + 1, Date.now())) {
      this.seq = msg.seq;
      o.counters.received.metrics += msg.points.length;
      o.aggregator.add(msg, { instanceId: DOGSTATSD_INSTANCE, seq: msg.seq });
      o.seqs.commit(DOGSTATSD_INSTANCE, msg.seq);
      const frame = encodeDogStatsdMetrics(msg);
      // Datagrams have no sender to resend them: on a failed commit they are kept in memory only
      // (counted in retentionErrors, reported by the retention condition).
      o.retention.store?.addFrame(
        { instanceId: DOGSTATSD_INSTANCE, seq: msg.seq, intervalStart: o.aggregator.intervalOf(msg.ts), payload: frame.subarray(5) },
        () => {},
      );
    }
  }
}
