import { Counter, Gauge, Registry } from 'prom-client';
import type { AgentState, CollectorStats } from './types';

/**
 * The collector's `/metrics` (Prometheus text format 0.0.4), made with prom-client.
 *
 * One Registry per collector (never prom-client's global one), so two collectors in one
 * process, as in the tests, do not share or clash over metrics. The counters live in
 * CollectorStats (also behind /api/stats); each metric reads them when scraped, through its
 * `collect` callback, so there is one source of truth and nothing to keep in step.
 */

const STATES: AgentState[] = ['live', 'stalled', 'disconnected'];

/** What a scrape reads. */
export interface MetricsSource {
  stats: CollectorStats;
  agentsByState: () => Record<AgentState, number>;
}

/** Counters and gauges are read from the source; a value that is not finite is shown as 0, as a counter cannot be NaN. */
function finite(v: number): number {
  return Number.isFinite(v) ? v : 0;
}

/**
 * A metric with one label whose values are the keys of `read()`: every scrape clears it and
 * sets each row again, so a row always shows the source's current value.
 */
function labelled(registry: Registry, type: 'counter' | 'gauge', name: string, help: string, label: string, read: () => Record<string, number>): void {
  const rows = (): [Record<string, string>, number][] => Object.entries(read()).map(([k, v]) => [{ [label]: k }, finite(v)]);
  const config = { name, help, labelNames: [label], registers: [registry] };
  if (type === 'gauge') {
    new Gauge({
      ...config,
      collect() {
        this.reset();
        for (const [labels, v] of rows()) this.set(labels, v);
      },
    });
  } else {
    new Counter({
      ...config,
      collect() {
        this.reset();
        for (const [labels, v] of rows()) this.inc(labels, v);
      },
    });
  }
}

/** A counter without labels that shows `read()`. */
function single(registry: Registry, name: string, help: string, read: () => number): void {
  new Counter({
    name,
    help,
    registers: [registry],
    collect() {
      this.reset();
      this.inc(finite(read()));
    },
  });
}

/** The collector's metrics, in the order /metrics lists them. */
export function createMetricsRegistry(src: MetricsSource): Registry {
  const registry = new Registry();
  const { stats } = src;
  labelled(registry, 'gauge', 'apm_collector_sessions', 'Agent sessions, by transport.', 'transport', () => stats.sessions);
  labelled(registry, 'gauge', 'apm_collector_agents', 'Known agents, by state.', 'state', () => {
    const byState = src.agentsByState();
    return Object.fromEntries(STATES.map((s) => [s, byState[s]]));
  });
  labelled(registry, 'counter', 'apm_collector_frames_total', 'Agent frames received, by type.', 'type', () => stats.frames);
  labelled(
    registry,
    'counter',
    'apm_collector_rejected_total',
    'Agent sessions, agent frames and HTTP API requests rejected, by reason.',
    'reason',
    () => stats.rejected,
  );
  single(registry, 'apm_collector_late_points_dropped_total', 'Metric points dropped because their minute was already final.', () => stats.droppedLate);
  labelled(registry, 'counter', 'apm_collector_received_total', 'Items stored, by kind (metricPoints counts points).', 'kind', () => stats.received);
  single(registry, 'apm_collector_duplicate_packs_total', 'Metric packs received again and ignored (still acked).', () => stats.duplicatePacks);
  single(
    registry,
    'apm_collector_store_errors_total',
    "Writes of agents' state or license the store could not take (written again later).",
    () => stats.storeErrors,
  );
  single(registry, 'apm_collector_prune_runs_total', 'Runs of the pruner (store_prune_interval_ms apart).', () => stats.pruned.runs);
  single(registry, 'apm_collector_pruned_rows_total', 'Stored rows deleted for being older than store_retention_days.', () => stats.pruned.rows);
  single(registry, 'apm_collector_prune_errors_total', 'Runs of the pruner that failed (the next run tries again).', () => stats.pruned.errors);
  return registry;
}

/**
 * The registry in text format, one line per HELP, TYPE and sample. prom-client's
 * `metrics()` puts a blank line between metrics; joining each metric's text ourselves
 * keeps the exposition as it always was, line for line.
 */
export async function prometheusText(registry: Registry): Promise<string> {
  const parts = await Promise.all(registry.getMetricsAsArray().map((m) => registry.getSingleMetricAsString(m.name)));
  return `${parts.join('\n')}\n`;
}
