/** What the sidecar counts by kind: metrics counts points, the others items. */
export type CounterName = 'metrics' | 'traces' | 'activeStacks' | 'events' | 'snapshots' | 'btRegistrations';

function counterSet(): Record<CounterName, number> {
  return { metrics: 0, traces: 0, activeStacks: 0, events: 0, snapshots: 0, btRegistrations: 0 };
}

/**
 * The sidecar's counters, written by its parts and read through SidecarStats by both
 * `apm-sidecar status` (as `counters`) and `/metrics`. Its fields are the status JSON's `counters`.
 */
export class Counters {
  readonly received = counterSet();
  readonly sent = counterSet();
  readonly dropped: Record<string, number> = {};
  readonly ipcErrors: Record<string, number> = {};
  /** Requests the http listener refused before a handler saw them (malformed, oversized headers, too slow), by code. */
  readonly httpErrors: Record<string, number> = {};
  duplicates = 0;
  connections = 0;
  /** Failed retention commits and maintenance transactions. */
  retentionErrors = 0;
  /** Durable frames not committed, so not acked: the shim was told to resend them later. */
  retentionRefused = 0;

  /** Count `n` items dropped for `reason` (DESIGN §6, §8: queue1_full, expired, disk_full, …). */
  drop(reason: string, n = 1): void {
    this.dropped[reason] = (this.dropped[reason] ?? 0) + n;
  }
}
