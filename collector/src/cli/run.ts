import type { ApmError } from '@apm-sidecar/proto';
import { type AgentServer, startAgentServer } from '../agent-server';
import { isLoopbackBind } from '../api-access';
import { closeServer, createHttpApi, listen } from '../http-api';
import { type Logger, createLogger } from '../logger';
import { type CollectorSettings, SettingError, parseSettings } from '../settings';
import { SqliteStore } from '../store/index';
import { Tunnel } from '../tunnel';
import { CollectorStats } from '../types';
import { EXIT_RUNTIME, EXIT_USAGE, defaultDataDir, die, failStore, modeText } from './common';

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
  licenses: number;
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
  let store: SqliteStore;
  try {
    store = SqliteStore.open(dataDir, {
      rollupGraceMs: settings.rollup_grace_ms,
      onDirTightened: (dir, old) => log.warn({ dataDir: dir, mode: modeText(old) }, `data directory had mode ${modeText(old)}; tightened to 0700`),
      onFileModeRestored: (file, old) =>
        log.warn({ file, mode: modeText(old) }, `${file} had mode ${modeText(old)}, not readable by the collector: restored to 0600`),
    });
  } catch (err) {
    log.fatal({ code: (err as ApmError).code, dataDir }, (err as Error).message);
    failStore(err);
  }
  // Like Redis's protected mode: an API reachable from other hosts must have a credential.
  if (!isLoopbackBind(o.http.host) && store.tokens.active().length === 0) {
    log.fatal({ code: 'ERR_NO_READ_TOKEN', http: o.http, dataDir }, 'refusing to serve the HTTP API on a non-loopback address without a read token');
    store.close();
    die(
      EXIT_USAGE,
      `--http ${o.http.host}:${o.http.port} is not a loopback address and no read token is configured, so anyone reaching the port could read the collected data; create one first with: apm-collector tokens create [--project NAME] --data-dir ${dataDir} (or listen on 127.0.0.1) [ERR_NO_READ_TOKEN]`,
    );
  }
  store.onRepair = (r) => {
    if (r instanceof Error) log.error({ err: r, code: 'ERR_STORE_CORRUPT' }, `collector.db has a damaged page and could not be rebuilt: ${r.message}`);
    else
      log.warn(
        { quarantined: r.quarantined, rows: r.rows, stoppedAt: r.error },
        `collector.db had a damaged page: rebuilt from its tables, the damaged file kept as ${r.quarantined}`,
      );
  };
  let reset = 0;
  try {
    reset = store.resetSessions(Date.now());
  } catch (err) {
    // A full disk at start must not keep the collector down: agents left 'live' by the last run
    // are corrected as they connect and disconnect.
    log.error({ err, code: 'ERR_STORE_WRITE' }, `cannot reset the agents' sessions of the last run: ${(err as Error).message}`);
  }
  log.info({ db: store.path, agentsReset: reset, settings }, 'store opened');
  const stats = new CollectorStats();
  // The agents' HTTP tunnel shares the HTTP port; it is attached once the agent server runs.
  let tunnel: Tunnel | null = null;
  const http = createHttpApi({
    store,
    stats,
    log,
    disconnectedRetentionMs: settings.disconnected_retention_ms,
    tokens: () => store.tokens.active(),
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
      idlePingMs: settings.idle_ping_ms,
      stallAfterMs: settings.stall_after_ms,
      licenseReleaseMs: settings.license_release_ms,
      maxFrameBytes: settings.max_frame_bytes,
      handshakeTimeoutMs: settings.handshake_timeout_ms,
      maxConnections: settings.max_connections,
      maxConnectionsPerIp: settings.max_connections_per_ip,
      tunnelSessionTimeoutMs: settings.tunnel_session_timeout_ms,
      keyPollMs: settings.key_revocation_poll_ms,
    });
  } catch (err) {
    log.fatal({ err }, 'cannot listen');
    await closeServer(http, 0);
    store.close();
    die(EXIT_RUNTIME, `cannot listen: ${(err as Error).message}`);
  }
  const agentServer = agents;
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
      dataDir,
      readTokens: store.tokens.active().length,
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
    agentServer
      .close()
      .then(() => closeServer(http))
      .then(
        () => {
          store.close();
          log.info('stopped');
          process.exit(0);
        },
        (err: unknown) => {
          log.error({ err }, 'shutdown failed');
          store.close();
          process.exit(EXIT_RUNTIME);
        },
      );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('uncaughtException', (err) => fatal(log, store, err));
  process.on('unhandledRejection', (err) => fatal(log, store, err));
}

function fatal(log: Logger, store: SqliteStore, err: unknown): never {
  log.fatal({ err }, 'unexpected error: exiting');
  try {
    store.close();
  } catch {
    // exiting anyway
  }
  process.exit(EXIT_RUNTIME);
}
