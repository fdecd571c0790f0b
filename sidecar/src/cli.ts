#!/usr/bin/env node
import { Command, CommanderError, Option } from 'commander';
import { ApmError } from '@apm-sidecar/proto';
import { ConfigError, type EffectiveConfig, configToJson, formatConfig, loadConfig } from './config';
import { startHttp } from './http';
import { createLogger } from './logger';
import { Sidecar, type UpstreamOptions } from './sidecar';
import { type AccessKey, parseAccessKey } from '@apm-sidecar/proto/upstream';
import { resolveDataDir } from './data-dir';
import { resolveSocketPath } from './socket-path';
import { requestControl, requestStatus } from './status-client';
import { humanStatus } from './status-text';

/** Exit codes: 0 ok, 1 runtime failure, 2 bad configuration or usage. */
const EXIT_RUNTIME = 1;
const EXIT_USAGE = 2;

/** Flags that map straight onto config keys. */
const KEY_FLAGS: [flag: string, key: string, help: string][] = [
  ['--socket <path>', 'socket', 'Unix socket the shims connect to'],
  ['--transport <name>', 'transport', 'upstream: tcp | http | debug'],
  ['--server-host <hosts>', 'server_host', 'collector host(s), comma-separated, tried in order'],
  ['--server-port <port>', 'server_port', 'collector port (shared by all hosts)'],
  ['--access-key-file <path>', 'access_key_file', 'file holding the access key (never pass the key itself as a flag)'],
  ['--data-dir <dir>', 'data_dir', 'directory for the retention database'],
  ['--http <host:port>', 'http', 'serve /healthz, /readyz and /metrics'],
  ['--profile <name>', 'profile', 'disconnected-behaviour profile: appdynamics | whatap'],
  ['--log-level <level>', 'log_level', 'trace | debug | info | warn | error | fatal | silent'],
];

interface ConfigOpts {
  config?: string;
  set?: string[];
  [k: string]: unknown;
}

function collect(v: string, prev: string[] = []): string[] {
  return [...prev, v];
}

function addConfigOptions(cmd: Command): Command {
  cmd.option('--config <path>', 'config file of `key = value` lines');
  cmd.option('--set <key=value>', 'set any configuration key (repeatable)', collect, []);
  for (const [flag, , help] of KEY_FLAGS) cmd.addOption(new Option(flag, help));
  return cmd;
}

function camel(key: string): string {
  return key.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
}

function effectiveConfig(opts: ConfigOpts): EffectiveConfig {
  const flags: Record<string, string | undefined> = {};
  for (const [, key] of KEY_FLAGS) {
    const v = opts[camel(key)];
    if (typeof v === 'string') flags[key] = v;
  }
  return loadConfig({ flags, sets: opts.set ?? [], env: process.env, configFile: opts.config });
}

function fail(err: unknown): never {
  if (err instanceof ConfigError) {
    process.stderr.write(`apm-sidecar: configuration error: ${err.message}\n`);
    process.exit(EXIT_USAGE);
  }
  if (err instanceof ApmError) {
    process.stderr.write(`apm-sidecar: ${err.message} [${err.code}]\n`);
    process.exit(EXIT_RUNTIME);
  }
  process.stderr.write(`apm-sidecar: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(EXIT_RUNTIME);
}

async function run(opts: ConfigOpts): Promise<void> {
  let eff: EffectiveConfig;
  try {
    eff = effectiveConfig(opts);
  } catch (err) {
    fail(err);
  }
  const c = eff.values;
  const log = createLogger(c.log_level);
  for (const w of eff.warnings) log.warn(w);
  let upstream: UpstreamOptions;
  try {
    upstream = upstreamOptions(eff);
  } catch (err) {
    fail(err);
  }
  const socketPath = resolveSocketPath(c.socket);
  const sidecar = new Sidecar({
    socketPath,
    socketGroup: c.socket_group,
    upstream,
    readyMaxAckAgeMs: c.ready_max_ack_age_ms,
    agentId: c.agent_id,
    flushMs: c.flush_ms,
    shimBufferBytes: c.shim_buffer_bytes,
    metricIntervalMs: c.metric_interval_ms,
    queue1Size: c.net_send_queue1_size,
    queue2Size: c.net_send_queue2_size,
    maxFrameBytes: c.ipc_max_frame_bytes,
    maxSeries: c.max_series,
    maxShims: c.max_shims,
    peerLimits: { helloTimeoutMs: c.ipc_hello_timeout_ms, maxUnreadBytes: c.ipc_max_unread_bytes },
    shutdownTimeoutMs: c.shutdown_timeout_ms,
    dataDir: resolveDataDir(c.data_dir),
    retentionMs: c.retention_ms,
    retentionSynchronous: c.retention_synchronous,
    retentionMaxBytes: c.retention_max_bytes,
    retentionMinFreeBytes: c.retention_min_free_bytes,
    eventReplayWindowMs: c.event_replay_window_ms,
    dogstatsdUdp: c.dogstatsd_udp,
    dogstatsdSocket: c.dogstatsd_socket,
    log,
  });
  try {
    await sidecar.start();
    if (c.http !== null) {
      const limits = {
        headersTimeoutMs: c.http_headers_timeout_ms,
        requestTimeoutMs: c.http_request_timeout_ms,
        keepAliveTimeoutMs: c.http_keep_alive_timeout_ms,
        maxHeaderBytes: c.http_max_header_bytes,
      };
      await startHttp(sidecar, c.http.host, c.http.port, limits, log);
    }
  } catch (err) {
    log.error({ code: (err as ApmError).code }, (err as Error).message);
    await sidecar.stop().catch(() => undefined);
    fail(err);
  }
  let signals = 0;
  const shutdown = (signal: string) => {
    if (signals++ > 0) {
      log.warn({ signal }, 'second signal: exiting now');
      process.exit(EXIT_RUNTIME);
    }
    log.info({ signal }, 'shutting down: flushing within shutdown_timeout_ms');
    sidecar.stop().then(
      () => process.exit(0),
      (err) => {
        log.error({ err }, 'shutdown failed');
        process.exit(EXIT_RUNTIME);
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGHUP', () => {
    void sidecar.control('reconnect').then((r) => log.info({ signal: 'SIGHUP', ok: r.ok }, r.message));
  });
}

/** The upstream a configuration asks for; a configuration error when it cannot be had. */
function upstreamOptions(eff: EffectiveConfig): UpstreamOptions {
  const c = eff.values;
  if (c.transport === 'debug') return { kind: 'debug', output: c.debug_output };
  if (c.access_key.length === 0) {
    throw new ConfigError(
      'access_key',
      eff.sources.access_key,
      `access_key: required for transport ${c.transport}; set APM_SIDECAR_ACCESS_KEY or --access-key-file (or use --transport debug)`,
    );
  }
  let key: AccessKey;
  try {
    key = parseAccessKey(c.access_key);
  } catch (err) {
    throw new ConfigError('access_key', eff.sources.access_key, `access_key: ${(err as Error).message} (from ${eff.sources.access_key})`);
  }
  return {
    kind: 'tcp',
    carrier: c.transport,
    hosts: c.server_host,
    port: c.server_port,
    key,
    connectTimeoutMs: c.tcp_connection_timeout,
    soTimeoutMs: c.tcp_so_timeout,
    maxSendBytes: c.net_send_max_bytes,
    schedule: c.reconnect_schedule_parsed,
    standbyAfterMs: c.standby_after_ms,
    muteAfterAttempts: c.mute_after_attempts,
  };
}

function socketFor(opts: ConfigOpts): string {
  try {
    return resolveSocketPath(effectiveConfig(opts).values.socket);
  } catch (err) {
    fail(err);
  }
}

async function status(opts: ConfigOpts & { json?: boolean }): Promise<void> {
  const path = socketFor(opts);
  let s: Record<string, unknown>;
  try {
    s = await requestStatus(path);
  } catch (err) {
    fail(err);
  }
  if (opts.json === true) {
    process.stdout.write(`${JSON.stringify(s, null, 2)}\n`);
    return;
  }
  process.stdout.write(humanStatus(s));
}

async function reconnect(opts: ConfigOpts): Promise<void> {
  const path = socketFor(opts);
  try {
    const r = await requestControl(path, 'reconnect');
    process.stdout.write(`${r.message}\n`);
    if (!r.ok) process.exitCode = EXIT_RUNTIME;
  } catch (err) {
    fail(err);
  }
}

/**
 * The effective configuration, the socket and data paths it resolves to (as `run` would), and the
 * same access-key check as `run`: a missing or malformed key exits 2 after the table is printed.
 */
function configCmd(opts: ConfigOpts & { json?: boolean }): void {
  let eff: EffectiveConfig;
  try {
    eff = effectiveConfig(opts);
  } catch (err) {
    fail(err);
  }
  const resolved = { socket: resolveSocketPath(eff.values.socket), dataDir: resolveDataDir(eff.values.data_dir) };
  let keyError: unknown = null;
  try {
    upstreamOptions(eff);
  } catch (err) {
    keyError = err;
  }
  if (opts.json === true) {
    const valid = keyError === null ? { ok: true } : { ok: false, error: (keyError as Error).message };
    process.stdout.write(`${JSON.stringify({ ...configToJson(eff), resolved, valid }, null, 2)}\n`);
  } else {
    process.stdout.write(formatConfig(eff));
    process.stdout.write(`\nresolved socket path:   ${resolved.socket}\nresolved data_dir:      ${resolved.dataDir}\n`);
  }
  if (keyError !== null) fail(keyError);
}

export function main(argv: string[]): void {
  const program = new Command('apm-sidecar');
  program.description('APM sidecar: receives metrics, traces and events from in-app shims and ships them upstream').version('0.1.0');
  program.exitOverride();
  program.configureOutput({ writeErr: (s) => process.stderr.write(s) });
  addConfigOptions(program.command('run').description('run the sidecar in the foreground')).action((o: ConfigOpts) => run(o));
  addConfigOptions(program.command('status').description('ask the running sidecar for its state, queues and counters'))
    .option('--json', 'print JSON')
    .action((o: ConfigOpts & { json?: boolean }) => status(o));
  addConfigOptions(program.command('reconnect').description('make the running sidecar try its upstream again now')).action((o: ConfigOpts) => reconnect(o));
  addConfigOptions(program.command('config').description('print the effective configuration and where each value came from (secrets masked)'))
    .option('--json', 'print JSON')
    .action((o: ConfigOpts & { json?: boolean }) => configCmd(o));
  for (const cmd of program.commands) cmd.exitOverride();
  program.parseAsync(argv).catch((err: unknown) => {
    if (err instanceof CommanderError) {
      process.exit(err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help' ? 0 : EXIT_USAGE);
    }
    fail(err);
  });
}

if (require.main === module) main(process.argv);
