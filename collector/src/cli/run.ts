import type { ApmError } from '@apm-sidecar/proto';
import { type AgentServer, startAgentServer } from '../agent-server';
import { isLoopbackBind } from '../api-access';
import { closeServer, createHttpApi, listen } from '../http-api';
import { type Logger, createLogger } from '../logger';
import { type CollectorSettings, SettingError, parseSettings } from '../settings';
import type { CollectorStore } from '../store/contract';
import { openStore } from '../store/open-store';
import { SqliteCollectorStore } from '../store/sqlite-store';
import { systemClock } from '../clock';
import { startPruner } from '../store-pruner';
import { Tunnel } from '../tunnel';
import { CollectorStats } from '../types';
import { EXIT_RUNTIME, EXIT_USAGE, defaultDataDir, die, failStore, modeText, storeSpecOf } from './common';

/**
 * apm-collector run: the store, the HTTP side (API, page, /metrics, the agents' tunnel) and
 * the agents' TCP port, in the foreground until SIGTERM or SIGINT.
 */

const SHUTDOWN_DEADLINE_MS = 10_000;

export interface RunOpts {
  port: number;
  host: string;
  http: { host: string; port: number };
  dataDir?: string;
  store?: string;
  /** The size of the store's license pool; undefined: as the store has it. */
  licenses?: number;
  set: string[];
  logLevel: string;
  metricsOpen?: boolean;
}

export async function run(o: RunOpts): Promise<void> {
  let settings: CollectorSettings;
  try {
    settings = parseSettings(o.set);
  } catch (err) {
    if (err instanceof SettingError) die(EXIT_USAGE, `configuration error: ${err.message}`);
    throw err;
  }
  const log = createLogger(o.logLevel);
  const dataDir = o.dataDir ?? defaultDataDir();
  const spec = storeSpecOf(o);
  let store: CollectorStore;
  try {
    store = await openStore(spec, dataDir, {
      rollupGraceMs: settings.rollup_grace_ms,
      onDirTightened: (dir, old) => log.warn({ dataDir: dir, mode: modeText(old) }, `data directory had mode ${modeText(old)}; tightened to 0700`),
      onFileModeRestored: (file, old) =>
        log.warn({ file, mode: modeText(old) }, `${file} had mode ${modeText(old)}, not readable by the collector: restored to 0600`),
    });
  } catch (err) {
    log.fatal({ code: (err as ApmError).code, store: spec.kind, dataDir: spec.kind === 'sqlite' ? dataDir : undefined }, (err as Error).message);
    failStore(err);
  }
  const where = spec.kind === 'sqlite' ? `--data-dir ${dataDir}` : `--store ${store.location}`;
  // Like Redis's protected mode: an API reachable from other hosts must have a credential.
  const readTokens = (await store.activeTokens()).length;
  if (!isLoopbackBind(o.http.host) && readTokens === 0) {
    log.fatal(
      { code: 'ERR_NO_READ_TOKEN', http: o.http, store: store.location },
      'refusing to serve the HTTP API on a non-loopback address without a read token',
    );
    await store.close();
    die(
      EXIT_USAGE,
      `--http ${o.http.host}:${o.http.port} is not a loopback address and no read token is configured, so anyone reaching the port could read the collected data; create one first with: apm-collector tokens create [--project NAME] ${where} (or listen on 127.0.0.1) [ERR_NO_READ_TOKEN]`,
    );
  }
  if (store instanceof SqliteCollectorStore) watchRepairs(store, log);
  else if ('onError' in store) {
    // A pooled PostgreSQL connection that dropped between queries: said once per failure, no URL password (the pg errors carry none).
    (store as { onError: (err: Error) => void }).onError = (err) =>
      log.warn({ code: 'ERR_STORE_UNAVAILABLE', err: err.message }, 'a PostgreSQL connection of the store failed; the pool opens another');
  }
  log.info({ store: store.kind, location: store.location, settings }, 'store opened');
  const stats = new CollectorStats();
  // The agents' HTTP tunnel shares the HTTP port; it is attached once the agent server runs.
  let tunnel: Tunnel | null = null;
  const http = createHttpApi({
    store,
    stats,
    log,
    disconnectedRetentionMs: settings.disconnected_retention_ms,
    tokens: () => store.activeTokens(),
    metricsOpen: o.metricsOpen === true,
    extraRoutes: (req, res) => tunnel?.route(req, res) ?? false,
    limits: {
      headersTimeoutMs: settings.http_headers_timeout_ms,
      requestTimeoutMs: settings.http_request_timeout_ms,
      keepAliveTimeoutMs: settings.http_keep_alive_timeout_ms,
      maxHeaderBytes: settings.http_max_header_bytes,
    },
  });
  let agents: AgentServer | null = null;
  let httpPort: number;
  try {
    httpPort = (await listen(http, o.http.host, o.http.port)).port;
    agents = await startAgentServer({
      host: o.host,
      port: o.port,
      store,
      stats,
      log,
      licenses: o.licenses,
      httpAddress: `${o.http.host}:${httpPort}`,
      idlePingMs: settings.idle_ping_ms,
      stallAfterMs: settings.stall_after_ms,
      licenseReleaseMs: settings.license_release_ms,
      maxFrameBytes: settings.max_frame_bytes,
      handshakeTimeoutMs: settings.handshake_timeout_ms,
      maxConnections: settings.max_connections,
      maxConnectionsPerIp: settings.max_connections_per_ip,
      tunnelSessionTimeoutMs: settings.tunnel_session_timeout_ms,
      keyPollMs: settings.key_revocation_poll_ms,
      heartbeatMs: settings.collector_heartbeat_ms,
      deadAfterMs: settings.collector_dead_after_ms,
    });
  } catch (err) {
    log.fatal({ err }, 'cannot listen');
    await closeServer(http, 0);
    await store.close();
    die(EXIT_RUNTIME, `cannot listen: ${(err as Error).message}`);
  }
  const agentServer = agents;
  // Stored data older than store_retention_days goes, in short batches that never hold ingest up.
  const pruner = startPruner({
    store,
    retentionDays: settings.store_retention_days,
    intervalMs: settings.store_prune_interval_ms,
    batchRows: settings.store_prune_batch_rows,
    clock: systemClock,
    log,
    counts: stats.pruned,
  });
  tunnel = new Tunnel({
    agents: agentServer,
    log,
    sessionTimeoutMs: settings.tunnel_session_timeout_ms,
    handshakeTimeoutMs: settings.handshake_timeout_ms,
    maxBodyBytes: settings.max_frame_bytes + 1024,
  });
  const agentTunnel = tunnel;
  log.info(
    {
      agents: { host: o.host, port: agentServer.port },
      http: { host: o.http.host, port: httpPort },
      store: store.location,
      readTokens,
      metricsOpen: o.metricsOpen === true,
    },
    'listening',
  );

  let stopping = false;
  const shutdown = (signal: string): void => {
    if (stopping) {
      log.warn({ signal }, 'second signal: exiting now');
      process.exit(EXIT_RUNTIME);
    }
    stopping = true;
    log.info({ signal }, 'shutting down');
    const deadline = setTimeout(() => {
      log.error({ deadlineMs: SHUTDOWN_DEADLINE_MS }, 'shutdown did not finish in time: exiting');
      process.exit(EXIT_RUNTIME);
    }, SHUTDOWN_DEADLINE_MS);
    deadline.unref();
    // Stop accepting and end agent sessions first (they write to the store), then HTTP, then the db.
    agentTunnel.close();
    pruner
      .stop()
      .then(() => agentServer.close())
      .then(() => closeServer(http))
      .then(() => store.close())
      .then(
        () => {
          log.info('stopped');
          process.exit(0);
        },
        (err: unknown) => {
          log.error({ err }, 'shutdown failed');
          void store.close().finally(() => process.exit(EXIT_RUNTIME));
        },
      );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('uncaughtException', (err) => fatal(log, store, err));
  process.on('unhandledRejection', (err) => fatal(log, store, err));
}

function fatal(log: Logger, store: CollectorStore, err: unknown): void {
  log.fatal({ err }, 'unexpected error: exiting');
  // SQLite closes at once; a PostgreSQL pool is given a moment.
  setTimeout(() => process.exit(EXIT_RUNTIME), 1000);
  store.close().then(
    () => process.exit(EXIT_RUNTIME),
    () => process.exit(EXIT_RUNTIME),
  );
}

/** collector.db rebuilt after a write met a damaged page (SQLite only): said in the log. */
function watchRepairs(store: SqliteCollectorStore, log: Logger): void {
  store.sqlite.onRepair = (r) => {
    if (r instanceof Error) log.error({ err: r, code: 'ERR_STORE_CORRUPT' }, `collector.db has a damaged page and could not be rebuilt: ${r.message}`);
    else
      log.warn(
        { quarantined: r.quarantined, rows: r.rows, stoppedAt: r.error },
        `collector.db had a damaged page: rebuilt from its tables, the damaged file kept as ${r.quarantined}`,
      );
  };
}
