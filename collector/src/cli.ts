#!/usr/bin/env node
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { ApmError } from '@apm-sidecar/proto';
import { formatAccessKey, keyFingerprint } from '@apm-sidecar/proto/upstream';
import { type AgentServer, startAgentServer } from './agent-server';
import { Tunnel } from './tunnel';
import { isLoopbackBind } from './api-access';
import { KeyNotFoundError, ProjectNameError, UnknownProjectError, UnknownTokenError } from './errors';
import { closeServer, createHttpApi, listen } from './http-api';
import { LOG_LEVELS, type Logger, createLogger } from './logger';
import { type CollectorSettings, SettingError, parseSettings } from './settings';
import { SqliteStore } from './store/index';
import { CollectorStats } from './types';

/** Exit codes: 0 ok, 1 runtime failure, 2 bad configuration or usage. */
const EXIT_RUNTIME = 1;
const EXIT_USAGE = 2;
const SHUTDOWN_DEADLINE_MS = 10_000;

export function defaultDataDir(env: NodeJS.ProcessEnv = process.env): string {
  const d = env.APM_COLLECTOR_DATA_DIR;
  return d !== undefined && d.length > 0 ? d : './.data/collector';
}

function parsePort(v: string): number {
  const n = /^\d+$/.test(v) ? Number(v) : Number.NaN;
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError('expected a port from 0 to 65535.');
  return n;
}

function parseCount(v: string): number {
  const n = /^\d+$/.test(v) ? Number(v) : Number.NaN;
  if (!Number.isSafeInteger(n)) throw new InvalidArgumentError('expected a non-negative integer (0 = unlimited).');
  return n;
}

/** HOST:PORT, [IPv6]:PORT. */
export function parseHostPort(v: string): { host: string; port: number } {
  const m = /^\[([0-9a-fA-F:.]+)\]:(\d+)$/.exec(v) ?? /^([^:\s[\]]+):(\d+)$/.exec(v);
  if (m === null) throw new InvalidArgumentError('expected HOST:PORT (for example 127.0.0.1:6680 or [::1]:6680).');
  return { host: m[1] as string, port: parsePort(m[2] as string) };
}

function collect(v: string, prev: string[] = []): string[] {
  return [...prev, v];
}

function die(code: number, message: string): never {
  process.stderr.write(`apm-collector: ${message}\n`);
  process.exit(code);
}

function failStore(err: unknown): never {
  if (err instanceof ProjectNameError || err instanceof UnknownProjectError || err instanceof UnknownTokenError)
    die(EXIT_USAGE, `${err.message} [${err.code}]`);
  if (err instanceof ApmError) die(EXIT_RUNTIME, `${err.message} [${err.code}]`);
  die(EXIT_RUNTIME, err instanceof Error ? err.message : String(err));
}

function modeText(mode: number): string {
  return mode.toString(8).padStart(4, '0');
}

/** For the key commands: a data directory tightened to 0700 is reported on stderr. */
function openStore(dataDir: string): SqliteStore {
  try {
    return SqliteStore.open(dataDir, {
      onDirTightened: (dir, old) => process.stderr.write(`apm-collector: data directory ${dir} had mode ${modeText(old)}; tightened to 0700\n`),
    });
  } catch (err) {
    failStore(err);
  }
}

interface RunOpts {
  port: number;
  host: string;
  http: { host: string; port: number };
  dataDir?: string;
  licenses: number;
  set: string[];
  logLevel: string;
  metricsOpen?: boolean;
}

async function run(o: RunOpts): Promise<void> {
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
  const reset = store.resetSessions(Date.now());
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

function keysCreate(o: { project: string; dataDir?: string }): void {
  const store = openStore(o.dataDir ?? defaultDataDir());
  try {
    const key = store.createKey(o.project);
    const keys = store.listKeys().filter((k) => k.projectId === key.projectId);
    const fp = keyFingerprint(key.secret);
    const active = keys.filter((k) => k.revokedAt === null).length;
    // Informational lines first; the key alone on the last line (`| tail -n 1`).
    process.stdout.write(
      key.created
        ? `created project ${JSON.stringify(keys[0]?.name ?? o.project.trim())} (project id ${key.projectId}) with access key ${fp}\n`
        : `added access key ${fp} to project ${key.projectId}: it has ${active} valid keys now; revoke the old one with: apm-collector keys revoke --fingerprint F\n`,
    );
    process.stdout.write('it is shown only this once; store it as a secret (e.g. in the sidecar access_key_file):\n');
    process.stdout.write(`${formatAccessKey(key)}\n`);
  } catch (err) {
    store.close();
    failStore(err);
  }
  store.close();
}

function keysList(o: { dataDir?: string; json?: boolean }): void {
  const store = openStore(o.dataDir ?? defaultDataDir());
  let keys: ReturnType<SqliteStore['listKeys']>;
  try {
    keys = store.listKeys();
  } finally {
    store.close();
  }
  const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());
  if (o.json === true) {
    process.stdout.write(
      `${JSON.stringify(
        keys.map((k) => ({ ...k, createdAt: iso(k.createdAt), revokedAt: iso(k.revokedAt) })),
        null,
        2,
      )}\n`,
    );
    return;
  }
  if (keys.length === 0) {
    process.stdout.write('no access keys; create one with: apm-collector keys create --project NAME\n');
    return;
  }
  const rows = [
    ['PROJECT ID', 'NAME', 'CREATED', 'FINGERPRINT', 'STATUS'],
    ...keys.map((k) => [k.projectId, k.name, iso(k.createdAt) as string, k.fingerprint, k.revokedAt === null ? 'valid' : `revoked ${iso(k.revokedAt)}`]),
  ];
  const widths = [0, 1, 2, 3].map((i) => Math.max(...rows.map((r) => (r[i] as string).length)));
  for (const r of rows) process.stdout.write(`${r.map((c, i) => (i < 4 ? c.padEnd(widths[i] as number) : c)).join('  ')}\n`);
}

function keysRevoke(o: { fingerprint: string; dataDir?: string }): void {
  const store = openStore(o.dataDir ?? defaultDataDir());
  try {
    const r = store.revokeKey(o.fingerprint);
    const left = store.projectKeys(r.projectId).filter((k) => k.revokedAt === null).length;
    if (r.alreadyRevokedAt !== null) {
      process.stdout.write(`access key ${r.fingerprint} of project ${r.projectId} was already revoked at ${new Date(r.alreadyRevokedAt).toISOString()}\n`);
    } else {
      process.stdout.write(`revoked access key ${r.fingerprint} of project ${r.projectId}; running collectors end its sessions within a second\n`);
    }
    if (left === 0)
      process.stdout.write(`project ${r.projectId} has no valid access key left; create one with: apm-collector keys create --project ${r.projectId}\n`);
  } catch (err) {
    store.close();
    if (err instanceof KeyNotFoundError) die(EXIT_USAGE, `${err.message} [${err.code}]`);
    failStore(err);
  }
  store.close();
}

/** The project a token is for: given by project id, or by name when one project has that name. */
function resolveProject(store: SqliteStore, nameOrId: string): string {
  const want = nameOrId.trim();
  const keys = store.listKeys();
  if (keys.some((k) => k.projectId === want)) return want;
  const ids = [...new Set(keys.filter((k) => k.name === want).map((k) => k.projectId))];
  if (ids.length === 1) return ids[0] as string;
  if (ids.length > 1) throw new UnknownProjectError(`several projects are named ${JSON.stringify(want)} (${ids.join(', ')}): give the project id`);
  throw new UnknownProjectError(
    `no project ${JSON.stringify(want)} (by id or name) has an access key here; create it with: apm-collector keys create --project NAME`,
  );
}

function tokensCreate(o: { project?: string; dataDir?: string }): void {
  const store = openStore(o.dataDir ?? defaultDataDir());
  try {
    const projectId = o.project === undefined ? null : resolveProject(store, o.project);
    const { tokenId, token } = store.tokens.create(projectId);
    // Informational lines first; the token alone on the last line (`| tail -n 1`).
    process.stdout.write(
      `created read token ${tokenId} for ${projectId === null ? 'every project' : `project ${projectId}`}\n` +
        'it is shown only this once; send it as "Authorization: Bearer <token>" (the web page asks for it):\n' +
        `${token}\n`,
    );
  } catch (err) {
    store.close();
    failStore(err);
  }
  store.close();
}

function tokensList(o: { dataDir?: string; json?: boolean }): void {
  const store = openStore(o.dataDir ?? defaultDataDir());
  let rows: ReturnType<SqliteStore['tokens']['list']>;
  try {
    rows = store.tokens.list();
  } finally {
    store.close();
  }
  const iso = (t: number | null) => (t === null ? null : new Date(t).toISOString());
  if (o.json === true) {
    process.stdout.write(
      `${JSON.stringify(
        rows.map((r) => ({ ...r, createdAt: iso(r.createdAt), revokedAt: iso(r.revokedAt) })),
        null,
        2,
      )}\n`,
    );
    return;
  }
  if (rows.length === 0) {
    process.stdout.write('no read tokens (protected mode: the API answers loopback clients only); create one with: apm-collector tokens create\n');
    return;
  }
  const table = [
    ['TOKEN ID', 'PROJECT', 'CREATED', 'REVOKED'],
    ...rows.map((r) => [r.tokenId, r.projectId ?? '(every project)', iso(r.createdAt) as string, iso(r.revokedAt) ?? '-']),
  ];
  const widths = [0, 1, 2].map((i) => Math.max(...table.map((r) => (r[i] as string).length)));
  for (const r of table) process.stdout.write(`${r.map((c, i) => (i < 3 ? c.padEnd(widths[i] as number) : c)).join('  ')}\n`);
}

function tokensRevoke(tokenId: string, o: { dataDir?: string }): void {
  const store = openStore(o.dataDir ?? defaultDataDir());
  let result: ReturnType<SqliteStore['tokens']['revoke']>;
  try {
    result = store.tokens.revoke(tokenId.trim());
  } finally {
    store.close();
  }
  if (result === 'unknown') failStore(new UnknownTokenError(tokenId));
  process.stdout.write(result === 'revoked' ? `revoked read token ${tokenId}\n` : `read token ${tokenId} was already revoked\n`);
}

export function main(argv: string[]): void {
  const program = new Command('apm-collector');
  program.description('apm-sidecar reference collector: authenticates agents, stores their data in SQLite, serves a JSON API and a web page').version('0.1.0');
  program.exitOverride();
  program.configureOutput({ writeErr: (s) => process.stderr.write(s) });
  const dataDirHelp = 'directory of the SQLite database (default: $APM_COLLECTOR_DATA_DIR, else ./.data/collector)';

  program
    .command('run')
    .description('run the collector in the foreground')
    .addOption(new Option('--port <port>', 'TCP port for agents (0 picks a free port)').default(6600).argParser(parsePort))
    .addOption(new Option('--host <host>', 'address for agents').default('0.0.0.0'))
    .addOption(
      new Option('--http <host:port>', 'HTTP address: tunnel, web page, JSON API, /metrics')
        .default(parseHostPort('127.0.0.1:6680'), '127.0.0.1:6680')
        .argParser(parseHostPort),
    )
    .addOption(new Option('--data-dir <dir>', dataDirHelp))
    .addOption(new Option('--licenses <n>', 'licenses available to agents (0 = unlimited)').default(0).argParser(parseCount))
    .addOption(
      new Option(
        '--set <key=value>',
        'set a collector duration or limit (repeatable): idle_ping_ms, tunnel_session_timeout_ms, disconnected_retention_ms, stall_after_ms, license_release_ms, rollup_grace_ms, max_frame_bytes, handshake_timeout_ms, max_connections, max_connections_per_ip, key_revocation_poll_ms',
      )
        .default([])
        .argParser(collect),
    )
    .addOption(new Option('--log-level <level>', 'log level').choices(LOG_LEVELS).default('info'))
    .addOption(new Option('--metrics-open', '/metrics answers every client without a token (default: loopback clients, or a collector-wide token)'))
    .action((o: RunOpts) => run(o));

  const keys = program.command('keys').description('manage the access keys agents authenticate with');
  keys
    .command('create')
    .description('create an access key for a project (a new one, or another key of an existing one: rotation); prints the key alone on the last line')
    .requiredOption('--project <name>', 'project name or id: an existing project gets another key; else a new project, its id derived from the name')
    .option('--data-dir <dir>', dataDirHelp)
    .action((o: { project: string; dataDir?: string }) => keysCreate(o));
  keys
    .command('list')
    .description('list access keys (project id, name, creation time, fingerprint, status — never the secret)')
    .option('--data-dir <dir>', dataDirHelp)
    .option('--json', 'print JSON')
    .action((o: { dataDir?: string; json?: boolean }) => keysList(o));
  keys
    .command('revoke')
    .description('revoke an access key: its handshakes are refused and running collectors end its sessions within a second')
    .requiredOption('--fingerprint <f>', 'the key fingerprint shown by keys list')
    .option('--data-dir <dir>', dataDirHelp)
    .action((o: { fingerprint: string; dataDir?: string }) => keysRevoke(o));

  const tokens = program.command('tokens').description('manage the read tokens of the HTTP API and web page');
  tokens
    .command('create')
    .description('create a read token (for every project, or one); prints the token alone on the last line')
    .option('--project <name>', 'only this project (its id, or its name when unique)')
    .option('--data-dir <dir>', dataDirHelp)
    .action((o: { project?: string; dataDir?: string }) => tokensCreate(o));
  tokens
    .command('list')
    .description('list read tokens (id, project, creation and revocation time — never the token)')
    .option('--data-dir <dir>', dataDirHelp)
    .option('--json', 'print JSON')
    .action((o: { dataDir?: string; json?: boolean }) => tokensList(o));
  tokens
    .command('revoke')
    .description('revoke a read token by its id; a running collector refuses it from the next request on')
    .argument('<token-id>', 'the id shown by tokens create / tokens list')
    .option('--data-dir <dir>', dataDirHelp)
    .action((id: string, o: { dataDir?: string }) => tokensRevoke(id, o));

  const all = (c: Command): void => {
    c.exitOverride();
    for (const sub of c.commands) all(sub);
  };
  all(program);
  program.parseAsync(argv).catch((err: unknown) => {
    if (err instanceof CommanderError) {
      process.exit(err.exitCode === 0 ? 0 : EXIT_USAGE);
    }
    failStore(err);
  });
}

if (require.main === module) main(process.argv);
