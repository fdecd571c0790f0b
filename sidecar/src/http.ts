import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import { SIDECAR_STATES } from '@apm-sidecar/proto';
import type { Logger } from './logger';
import type { Sidecar } from './sidecar';

/**
 * `--http HOST:PORT`: /healthz (the process is up), /readyz (the IPC socket is
 * listening, the sidecar is not shutting down, and the upstream is ready: see
 * Sidecar.readiness), /metrics (Prometheus text).
 */
export function startHttp(sidecar: Sidecar, host: string, port: number, log: Logger): Promise<Server> {
  const server = createServer((req, res) => handle(sidecar, req, res));
  server.on('clientError', (_err, socket) => socket.destroy());
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      const a = server.address();
      log.info({ http: a }, 'serving /healthz, /readyz and /metrics');
      resolve(server);
    });
  });
}

function handle(sidecar: Sidecar, req: IncomingMessage, res: ServerResponse): void {
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('method not allowed\n');
    return;
  }
  const path = (req.url ?? '/').split('?')[0];
  if (path === '/healthz') {
    res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
  } else if (path === '/readyz') {
    const r = sidecar.readiness();
    res.writeHead(r.ready ? 200 : 503, { 'content-type': 'application/json' }).end(`${JSON.stringify(r)}\n`);
  } else if (path === '/metrics') {
    res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(prometheus(sidecar));
  } else {
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
  }
}

const RETENTION_CONDITIONS = ['ok', 'full', 'failing', 'unavailable'] as const;

function esc(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

export function prometheus(sidecar: Sidecar): string {
  const out: string[] = [];
  const metric = (name: string, type: string, help: string, rows: [Record<string, string>, number][]) => {
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, v] of rows) {
      const l = Object.entries(labels)
        .map(([k, x]) => `${k}="${esc(x)}"`)
        .join(',');
      out.push(`${name}${l.length > 0 ? `{${l}}` : ''} ${v}`);
    }
  };
  const c = sidecar.counters;
  const st = sidecar.state.state;
  metric(
    'apm_sidecar_state',
    'gauge',
    'Current state (1 for the current one).',
    SIDECAR_STATES.map((s) => [{ state: s }, s === st ? 1 : 0]),
  );
  metric('apm_sidecar_queue_depth', 'gauge', 'Packs waiting in a send queue.', [
    [{ queue: 'queue1' }, sidecar.queue1.depth],
    [{ queue: 'queue2' }, sidecar.queue2.depth],
  ]);
  metric('apm_sidecar_queue_capacity', 'gauge', 'Capacity of a send queue in packs.', [
    [{ queue: 'queue1' }, sidecar.queue1.capacity],
    [{ queue: 'queue2' }, sidecar.queue2.capacity],
  ]);
  metric(
    'apm_sidecar_dropped_total',
    'counter',
    'Items dropped, by reason.',
    Object.entries(c.dropped).map(([k, v]) => [{ reason: k }, v]),
  );
  metric(
    'apm_sidecar_received_total',
    'counter',
    'Items received from shims, by kind (metrics counts points).',
    Object.entries(c.received).map(([k, v]) => [{ kind: k }, v]),
  );
  metric(
    'apm_sidecar_sent_total',
    'counter',
    'Items delivered upstream, by kind (metrics counts points).',
    Object.entries(c.sent).map(([k, v]) => [{ kind: k }, v]),
  );
  metric(
    'apm_sidecar_ipc_errors_total',
    'counter',
    'IPC connections closed for a protocol error, by code.',
    Object.entries(c.ipcErrors).map(([k, v]) => [{ code: k }, v]),
  );
  metric('apm_sidecar_duplicates_total', 'counter', 'Durable frames received again and ignored.', [[{}, c.duplicates]]);
  metric('apm_sidecar_shims', 'gauge', 'Connected shims.', [[{}, sidecar.shimCount]]);
  const snap = sidecar.status() as {
    retention: { rows: number; oldestAgeMs: number; condition: string; usedBytes: number | null; freeBytes: number | null };
    upstream: Record<string, unknown>;
  };
  metric('apm_sidecar_retention_rows', 'gauge', 'Rows in the retention database (frames, packs, unsent registrations).', [[{}, snap.retention.rows]]);
  metric('apm_sidecar_retention_oldest_age_seconds', 'gauge', 'Age of the oldest retained metric interval.', [[{}, snap.retention.oldestAgeMs / 1000]]);
  metric(
    'apm_sidecar_retention_condition',
    'gauge',
    'Retention condition (1 for the current one): ok, full (beyond its space bounds, dropping the oldest), failing (commits fail: durable frames not acked), unavailable (not open).',
    RETENTION_CONDITIONS.map((x) => [{ condition: x }, x === snap.retention.condition ? 1 : 0]),
  );
  metric('apm_sidecar_retention_errors_total', 'counter', 'Failed retention commits and maintenance transactions.', [[{}, c.retentionErrors]]);
  metric('apm_sidecar_retention_refused_total', 'counter', 'Durable frames not committed, so not acked (the shim resends them).', [[{}, c.retentionRefused]]);
  if (snap.retention.usedBytes !== null)
    metric('apm_sidecar_retention_used_bytes', 'gauge', 'Bytes of rows (and WAL) in the retention database.', [[{}, snap.retention.usedBytes]]);
  if (snap.retention.freeBytes !== null)
    metric('apm_sidecar_retention_fs_free_bytes', 'gauge', 'Free bytes on the filesystem of data_dir.', [[{}, snap.retention.freeBytes]]);
  const up = snap.upstream;
  const num = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) ? v : 0);
  if (up.transport !== 'debug') {
    metric('apm_sidecar_reconnect_attempts_total', 'counter', 'Connection attempts to the collector.', [[{}, num(up.reconnectAttempts)]]);
    metric('apm_sidecar_upstream_bytes_sent_total', 'counter', 'Bytes written to the collector (framed and sealed).', [[{}, num(up.bytesSent)]]);
    metric('apm_sidecar_upstream_frames_sent_total', 'counter', 'Frames written to the collector.', [[{}, num(up.framesSent)]]);
    metric('apm_sidecar_upstream_connected', 'gauge', '1 while an upstream session is active.', [[{}, up.connected === true ? 1 : 0]]);
    const errs = typeof up.sessionErrors === 'object' && up.sessionErrors !== null ? (up.sessionErrors as Record<string, unknown>) : {};
    metric(
      'apm_sidecar_upstream_session_errors_total',
      'counter',
      'Upstream sessions ended by a typed error, by code.',
      Object.entries(errs).map(([k, v]) => [{ code: k }, num(v)]),
    );
    if (typeof up.lastAckAgeMs === 'number')
      metric('apm_sidecar_last_ack_age_seconds', 'gauge', 'Time since the collector last acked a frame.', [[{}, up.lastAckAgeMs / 1000]]);
  }
  const agg = sidecar.aggregationStats();
  metric('apm_sidecar_aggregation_points', 'gauge', 'Metric points held in open intervals.', [[{}, agg.points]]);
  return `${out.join('\n')}\n`;
}
