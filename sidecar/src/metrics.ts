import { SIDECAR_STATES } from '@apm-sidecar/proto';
import { Counter, Gauge, Registry } from 'prom-client';
import type { SidecarStats, SidecarStatus } from './stats';

/**
 * The sidecar's `/metrics` (Prometheus text format 0.0.4), made with prom-client.
 *
 * One Registry per sidecar (never prom-client's global one). Every metric reads the snapshot
 * of SidecarStats taken for the scrape, in its `collect` callback: the same numbers as
 * `apm-sidecar status`, from one source. A metric whose `read` gives null is left out of
 * that scrape (e.g. the upstream's when the transport is `debug`).
 */

interface MetricBase {
  name: string;
  type: 'counter' | 'gauge';
  help: string;
}

/** A metric of one value, or of one value per label value; `read` gives null to leave it out. */
type MetricDef =
  | (MetricBase & { label?: undefined; read: (s: SidecarStatus) => number | null })
  | (MetricBase & { label: string; read: (s: SidecarStatus) => Record<string, number> | null });

const RETENTION_CONDITIONS = ['ok', 'full', 'failing', 'unavailable'] as const;

/** 1 for `current`, 0 for the others. */
function oneHot(all: readonly string[], current: string): Record<string, number> {
  return Object.fromEntries(all.map((x) => [x, x === current ? 1 : 0]));
}

function num(v: unknown): number {
  return typeof v === 'number' && Number.isFinite(v) ? v : 0;
}

/** The upstream's figures, only for a real upstream (not `debug`). */
function upstream<T>(read: (up: Record<string, unknown>) => T | null): (s: SidecarStatus) => T | null {
  return (s) => (s.upstream.transport === 'debug' ? null : read(s.upstream));
}

/** The sidecar's metrics, in the order /metrics lists them. */
const METRICS: MetricDef[] = [
  { name: 'apm_sidecar_state', type: 'gauge', help: 'Current state (1 for the current one).', label: 'state', read: (s) => oneHot(SIDECAR_STATES, s.state) },
  {
    name: 'apm_sidecar_queue_depth',
    type: 'gauge',
    help: 'Packs waiting in a send queue.',
    label: 'queue',
    read: (s) => ({ queue1: s.queues.queue1.depth, queue2: s.queues.queue2.depth }),
  },
  {
    name: 'apm_sidecar_queue_capacity',
    type: 'gauge',
    help: 'Capacity of a send queue in packs.',
    label: 'queue',
    read: (s) => ({ queue1: s.queues.queue1.capacity, queue2: s.queues.queue2.capacity }),
  },
  { name: 'apm_sidecar_dropped_total', type: 'counter', help: 'Items dropped, by reason.', label: 'reason', read: (s) => s.counters.dropped },
  {
    name: 'apm_sidecar_received_total',
    type: 'counter',
    help: 'Items received from shims, by kind (metrics counts points).',
    label: 'kind',
    read: (s) => s.counters.received,
  },
  {
    name: 'apm_sidecar_sent_total',
    type: 'counter',
    help: 'Items delivered upstream, by kind (metrics counts points).',
    label: 'kind',
    read: (s) => s.counters.sent,
  },
  {
    name: 'apm_sidecar_ipc_errors_total',
    type: 'counter',
    help: 'IPC connections closed for a protocol error, by code.',
    label: 'code',
    read: (s) => s.counters.ipcErrors,
  },
  {
    name: 'apm_sidecar_http_errors_total',
    type: 'counter',
    help: 'HTTP requests refused before reaching a route (malformed, headers too large, too slow), by code.',
    label: 'code',
    read: (s) => s.counters.httpErrors,
  },
  { name: 'apm_sidecar_duplicates_total', type: 'counter', help: 'Durable frames received again and ignored.', read: (s) => s.counters.duplicates },
  { name: 'apm_sidecar_shims', type: 'gauge', help: 'Connected shims.', read: (s) => s.shims.length },
  {
    name: 'apm_sidecar_retention_rows',
    type: 'gauge',
    help: 'Rows in the retention database (frames, packs, unsent registrations).',
    read: (s) => s.retention.rows,
  },
  {
    name: 'apm_sidecar_retention_oldest_age_seconds',
    type: 'gauge',
    help: 'Age of the oldest retained metric interval.',
    read: (s) => s.retention.oldestAgeMs / 1000,
  },
  {
    name: 'apm_sidecar_retention_condition',
    type: 'gauge',
    help: 'Retention condition (1 for the current one): ok, full (beyond its space bounds, dropping the oldest), failing (commits fail: durable frames not acked), unavailable (not open).',
    label: 'condition',
    read: (s) => oneHot(RETENTION_CONDITIONS, s.retention.condition),
  },
  {
    name: 'apm_sidecar_retention_errors_total',
    type: 'counter',
    help: 'Failed retention commits and maintenance transactions.',
    read: (s) => s.counters.retentionErrors,
  },
  {
    name: 'apm_sidecar_retention_refused_total',
    type: 'counter',
    help: 'Durable frames not committed, so not acked (the shim resends them).',
    read: (s) => s.counters.retentionRefused,
  },
  {
    name: 'apm_sidecar_retention_used_bytes',
    type: 'gauge',
    help: 'Bytes of rows (and WAL) in the retention database.',
    read: (s) => s.retention.usedBytes,
  },
  { name: 'apm_sidecar_retention_fs_free_bytes', type: 'gauge', help: 'Free bytes on the filesystem of data_dir.', read: (s) => s.retention.freeBytes },
  {
    name: 'apm_sidecar_reconnect_attempts_total',
    type: 'counter',
    help: 'Connection attempts to the collector.',
    read: upstream((up) => num(up.reconnectAttempts)),
  },
  {
    name: 'apm_sidecar_upstream_bytes_sent_total',
    type: 'counter',
    help: 'Bytes written to the collector (framed and sealed).',
    read: upstream((up) => num(up.bytesSent)),
  },
  {
    name: 'apm_sidecar_upstream_frames_sent_total',
    type: 'counter',
    help: 'Frames written to the collector.',
    read: upstream((up) => num(up.framesSent)),
  },
  {
    name: 'apm_sidecar_upstream_connected',
    type: 'gauge',
    help: '1 while an upstream session is active.',
    read: upstream((up) => (up.connected === true ? 1 : 0)),
  },
  {
    name: 'apm_sidecar_upstream_session_errors_total',
    type: 'counter',
    help: 'Upstream sessions ended by a typed error, by code.',
    label: 'code',
    read: upstream((up) => {
      const errs = typeof up.sessionErrors === 'object' && up.sessionErrors !== null ? (up.sessionErrors as Record<string, unknown>) : {};
      return Object.fromEntries(Object.entries(errs).map(([k, v]) => [k, num(v)]));
    }),
  },
  {
    name: 'apm_sidecar_last_ack_age_seconds',
    type: 'gauge',
    help: 'Time since the collector last acked a frame.',
    read: upstream((up) => (typeof up.lastAckAgeMs === 'number' ? up.lastAckAgeMs / 1000 : null)),
  },
  { name: 'apm_sidecar_aggregation_points', type: 'gauge', help: 'Metric points held in open intervals.', read: (s) => s.aggregation.points },
  {
    name: 'apm_sidecar_dogstatsd_lines_total',
    type: 'counter',
    help: 'DogStatsD lines received, by what they were (metric, event, service_check, invalid).',
    label: 'kind',
    read: (s) =>
      s.dogstatsd === null
        ? null
        : { metric: s.dogstatsd.metrics, event: s.dogstatsd.events, service_check: s.dogstatsd.serviceChecks, invalid: s.dogstatsd.invalid },
  },
  {
    name: 'apm_sidecar_dogstatsd_invalid_total',
    type: 'counter',
    help: 'DogStatsD lines refused, by reason.',
    label: 'reason',
    read: (s) => (s.dogstatsd === null ? null : { ...s.dogstatsd.invalidByReason }),
  },
];

/** A counter cannot be NaN: a value that is not finite is shown as 0. */
function finite(v: number): number {
  return Number.isFinite(v) ? v : 0;
}

/** The samples of a metric in this snapshot: one without labels, or one per label value. */
function samples(def: MetricDef, snap: SidecarStatus): [Record<string, string>, number][] {
  if (def.label === undefined) {
    const v = def.read(snap);
    return v === null ? [] : [[{}, v]];
  }
  const label = def.label;
  return Object.entries(def.read(snap) ?? {}).map(([k, v]) => [{ [label]: k }, v]);
}

export class SidecarMetrics {
  private readonly registry = new Registry();
  /** The snapshot of the scrape in progress: every collect callback runs within text(). */
  private snap: SidecarStatus | null = null;

  constructor(private readonly stats: SidecarStats) {
    for (const def of METRICS) this.register(def);
  }

  /**
   * One scrape, one line per HELP, TYPE and sample. prom-client's `metrics()` puts a blank
   * line between metrics; joining each metric's text here keeps the exposition line for line
   * as it was (the collector's prometheus.ts does the same; the sidecar keeps its own copy as
   * the two packages share no module that may depend on prom-client).
   */
  async text(): Promise<string> {
    const snap = this.stats.snapshot();
    this.snap = snap;
    const shown = METRICS.filter((d) => d.read(snap) !== null);
    // getSingleMetricAsString calls each collect callback before its first await, so all of
    // them read this scrape's snapshot even when scrapes overlap.
    const parts = await Promise.all(shown.map((d) => this.registry.getSingleMetricAsString(d.name)));
    return `${parts.join('\n')}\n`;
  }

  private register(def: MetricDef): void {
    const read = (): [Record<string, string>, number][] => (this.snap === null ? [] : samples(def, this.snap));
    const config = { name: def.name, help: def.help, labelNames: def.label === undefined ? [] : [def.label], registers: [this.registry] };
    if (def.type === 'gauge') {
      new Gauge({
        ...config,
        collect() {
          this.reset();
          for (const [labels, v] of read()) this.set(labels, v);
        },
      });
    } else {
      new Counter({
        ...config,
        collect() {
          this.reset();
          for (const [labels, v] of read()) this.inc(labels, finite(v));
        },
      });
    }
  }
}
