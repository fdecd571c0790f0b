/**
 * The sidecar's effective configuration: every key, where its value came from, and one
 * validation step that turns text into typed values. Pure apart from reading the config file
 * and the access-key file (synchronously, once, at start-up).
 *
 * Precedence, highest first (DESIGN §8):
 *
 *   flag     named flags (`--server-port`), then `--set key=value` (a named flag beats --set;
 *            a later --set beats an earlier one)
 *   env      APM_SIDECAR_<KEY upper-cased>
 *   file     --config PATH, `key = value` lines (a later line beats an earlier one)
 *   profile  `profile` (appdynamics | whatap) supplies reconnect_schedule
 *   default
 *
 * The access key never comes from a plain flag (it would show in `ps`): only from
 * APM_SIDECAR_ACCESS_KEY, the config file, or the file named by access_key_file.
 */
import { readFileSync, statSync } from 'node:fs';
import { hostname } from 'node:os';
import { isIP } from 'node:net';
import { ApmError } from '@apm-sidecar/proto';
import {
  PROFILES,
  type ProfileName,
  type ReconnectSchedule,
  ReconnectScheduleError,
  formatReconnectSchedule,
  parseReconnectSchedule,
} from './reconnect-schedule';

export const ENV_PREFIX = 'APM_SIDECAR_';
/** Variables with the prefix that configure the shim, not the sidecar: an environment shared by both must not stop the sidecar. */
export const SHIM_ONLY_ENV: readonly string[] = ['APM_SIDECAR_SOCKET_OWNER'];

export type Transport = 'tcp' | 'http' | 'debug';
export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';

/** A listening or connecting address given as `HOST:PORT` (IPv6 as `[::1]:PORT`). */
export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/** Every configuration value, typed. Durations are milliseconds. */
export interface SidecarConfig {
  /** Unix socket path; '' = resolved at run time (DESIGN §3). */
  readonly socket: string;
  /** Group allowed to use the socket ('' = owner only). */
  readonly socket_group: string;
  readonly transport: Transport;
  /** Collector hosts in fail-over order; at least one. */
  readonly server_host: string[];
  readonly server_port: number;
  /** Secret. '' = none configured. */
  readonly access_key: string;
  readonly access_key_file: string;
  /** Directory of the SQLite retention file; '' = resolved at run time. */
  readonly data_dir: string;
  /** /healthz, /readyz, /metrics listener; null = off. */
  readonly http: HostPort | null;
  readonly profile: ProfileName;
  readonly log_level: LogLevel;
  /** Resolved: os.hostname() when not configured. */
  readonly agent_id: string;
  readonly tcp_connection_timeout: number;
  readonly tcp_so_timeout: number;
  readonly net_send_max_bytes: number;
  readonly net_send_queue1_size: number;
  readonly net_send_queue2_size: number;
  readonly ipc_max_frame_bytes: number;
  readonly ipc_hello_timeout_ms: number;
  readonly ipc_max_unread_bytes: number;
  readonly flush_ms: number;
  readonly metric_interval_ms: number;
  readonly retention_ms: number;
  readonly standby_after_ms: number;
  readonly mute_after_attempts: number;
  /** The schedule as text (canonical form); the parsed form is `reconnect_schedule_parsed`. */
  readonly reconnect_schedule: string;
  readonly event_replay_window_ms: number;
  readonly shutdown_timeout_ms: number;
  readonly ready_max_ack_age_ms: number;
  /** DogStatsD UDP listener; null = off. */
  readonly dogstatsd_udp: HostPort | null;
  /** DogStatsD Unix datagram socket path; '' = off. */
  readonly dogstatsd_socket: string;
  /** SQLite `synchronous` for the retention: NORMAL survives kill -9, FULL also power loss. */
  readonly retention_synchronous: 'NORMAL' | 'FULL';
  /** Bytes of rows the retention may hold; beyond it the oldest metrics are dropped (`disk_full`). */
  readonly retention_max_bytes: number;
  /** Bytes to keep free on the data_dir filesystem; below it the oldest metrics are dropped (`disk_full`). */
  readonly retention_min_free_bytes: number;
  /** Where the `debug` transport prints packs: '-' = stdout, else a file path. */
  readonly debug_output: string;
  readonly max_series: number;
  readonly max_shims: number;
  readonly shim_buffer_bytes: number;
  /** Derived from `reconnect_schedule`; not a key of its own. */
  readonly reconnect_schedule_parsed: ReconnectSchedule;
}

export type ConfigKey = Exclude<keyof SidecarConfig, 'reconnect_schedule_parsed'>;

/** One configuration key: how it is documented, validated (`parse`) and printed (`format`). */
export interface ConfigKeyDef<T = unknown> {
  readonly name: ConfigKey;
  /** Human-readable type, e.g. `integer 1..65535`, `duration ms`, `tcp|http|debug`. */
  readonly type: string;
  /** The default as text, as it would be written in a config file. */
  readonly default: string;
  readonly description: string;
  /** Never printed, never echoed in an error message. */
  readonly secret: boolean;
  /** Validates and converts the text form; throws `InvalidValue` with a phrase like `is not an integer`. */
  parse(raw: string): T;
  /** The text form of a value, as it would be written in a config file. */
  format(value: T): string;
}

/**
 * A key or value that cannot be accepted. `key` is the key (or the offending text when it names
 * no key), `source` where it came from (`env:APM_SIDECAR_SERVER_PORT`, `file:/x.conf:3`, ...).
 */
export class ConfigError extends ApmError {
  readonly key: string;
  readonly source: string;
  constructor(key: string, source: string, message: string) {
    super('ERR_CONFIG', message);
    this.key = key;
    this.source = source;
  }
}

/** Thrown by a key's `parse`; turned into a `ConfigError` that names the key and the source. */
export class InvalidValue extends Error {
  constructor(readonly problem: string) {
    super(problem);
  }
}

function invalid(problem: string): never {
  throw new InvalidValue(problem);
}

// ---------------------------------------------------------------------------------------------
// Value parsers

const DIGITS = /^[0-9]+$/;
/** Node timers cannot wait longer than this. */
const MAX_TIMER_MS = 2_147_483_647;
const MAX_UNIX_SOCKET_PATH_BYTES = 107; // sun_path is 108 bytes on Linux, including the NUL

function integer(raw: string, min: number, max: number): number {
  const text = raw.trim();
  if (!DIGITS.test(text)) {
    if (/^[+-]?[0-9]+$/.test(text) && Number(text) < 0) invalid(`is negative; must be at least ${min}`);
    invalid('is not an integer');
  }
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n > max) invalid(`is greater than the maximum ${max}`);
  if (n < min) invalid(`is less than the minimum ${min}`);
  return n;
}

function oneOf<T extends string>(values: readonly T[]) {
  return (raw: string): T => {
    const text = raw.trim();
    if ((values as readonly string[]).includes(text)) return text as T;
    return invalid(`is not one of ${values.join(', ')}`);
  };
}

const HOSTNAME = /^(?=.{1,253}\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$/;

/** A host name, IPv4 address or IPv6 address (brackets optional and removed). */
function host(text: string, what: string): string {
  const h = text.startsWith('[') && text.endsWith(']') ? text.slice(1, -1) : text;
  if (h === '') invalid(`has an empty ${what}`);
  if (isIP(h) !== 0) return h;
  if (/^[^:]+:[0-9]*$/.test(h)) invalid(`has a port in ${what} ${JSON.stringify(h)}; give the port separately`);
  if (!HOSTNAME.test(h)) invalid(`has an invalid ${what} ${JSON.stringify(h)}`);
  return h;
}

function hostList(raw: string): string[] {
  if (raw.trim() === '') invalid('is empty; give at least one host');
  return raw.split(',').map((part) => host(part.trim(), 'host'));
}

/** `HOST:PORT` or `[IPV6]:PORT`; port 0 is allowed (pick a free port). '' = off. */
function hostPortOrOff(raw: string): HostPort | null {
  const text = raw.trim();
  if (text === '') return null;
  const colon = text.lastIndexOf(':');
  if (colon < 0) invalid('is not HOST:PORT (no port)');
  const hostText = text.slice(0, colon);
  if (hostText.includes(':') && !hostText.startsWith('[')) invalid('is not HOST:PORT (write an IPv6 host in brackets, e.g. [::1]:8125)');
  const portText = text.slice(colon + 1);
  if (!DIGITS.test(portText)) invalid(`is not HOST:PORT (port ${JSON.stringify(portText)} is not an integer)`);
  const port = Number(portText);
  if (port > 65535) invalid(`is not HOST:PORT (port ${port} is greater than 65535)`);
  return { host: host(hostText, 'host'), port };
}

function formatHostPort(v: HostPort | null): string {
  if (v === null) return '';
  return isIP(v.host) === 6 ? `[${v.host}]:${v.port}` : `${v.host}:${v.port}`;
}

function noControlChars(raw: string): void {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting them is the point
  if (/[\u0000-\u001f\u007f]/.test(raw)) invalid('contains a control character');
}

function text(raw: string): string {
  noControlChars(raw);
  return raw;
}

function unixSocketPath(raw: string): string {
  noControlChars(raw);
  if (Buffer.byteLength(raw) > MAX_UNIX_SOCKET_PATH_BYTES) {
    invalid(`is ${Buffer.byteLength(raw)} bytes long; a Unix socket path may be at most ${MAX_UNIX_SOCKET_PATH_BYTES}`);
  }
  return raw;
}

/** Validates and returns the canonical text (`7x60000, 300000` → `7x60000,300000`). */
function schedule(raw: string): string {
  try {
    return formatReconnectSchedule(parseReconnectSchedule(raw));
  } catch (err) {
    if (err instanceof ReconnectScheduleError) invalid(`is not a valid reconnect schedule: ${err.detail}`);
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// The table

const str = String;
const num = (v: number): string => String(v);

function intKey(name: ConfigKey, def: number, min: number, max: number, unit: string, description: string): ConfigKeyDef<number> {
  const range = max === MAX_TIMER_MS || max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `${min}..${max}`;
  return {
    name,
    type: `${unit} ${range}`,
    default: String(def),
    description,
    secret: false,
    parse: (raw) => integer(raw, min, max),
    format: num,
  };
}
const duration = (name: ConfigKey, def: number, description: string, min = 0): ConfigKeyDef<number> =>
  intKey(name, def, min, MAX_TIMER_MS, 'duration ms', description);
const size = (name: ConfigKey, def: number, description: string, min = 1, max = Number.MAX_SAFE_INTEGER): ConfigKeyDef<number> =>
  intKey(name, def, min, max, 'integer', description);

function textKey(name: ConfigKey, description: string, opts: { secret?: boolean; parse?: (raw: string) => string; type?: string } = {}): ConfigKeyDef<string> {
  return { name, type: opts.type ?? 'string', default: '', description, secret: opts.secret ?? false, parse: opts.parse ?? text, format: str };
}

function enumKey<T extends string>(name: ConfigKey, values: readonly T[], def: T, description: string): ConfigKeyDef<T> {
  return { name, type: values.join('|'), default: def, description, secret: false, parse: oneOf(values), format: str };
}

function hostPortKey(name: ConfigKey, description: string): ConfigKeyDef<HostPort | null> {
  return { name, type: 'HOST:PORT or empty', default: '', description, secret: false, parse: hostPortOrOff, format: formatHostPort };
}

const TRANSPORTS: readonly Transport[] = ['tcp', 'http', 'debug'];
const LOG_LEVELS: readonly LogLevel[] = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];
const PROFILE_NAMES = Object.keys(PROFILES) as ProfileName[];

const KEY_DEFS: { readonly [K in ConfigKey]: ConfigKeyDef<SidecarConfig[K]> } = {
  socket: textKey('socket', 'Unix socket the shims connect to; empty = /var/run/apm-sidecar/apm.sock, $XDG_RUNTIME_DIR or the temp dir', {
    parse: unixSocketPath,
    type: 'path',
  }),
  socket_group: textKey('socket_group', 'group (name or id) given access to the socket (directory 0770, socket 0660); empty = owner only'),
  transport: enumKey('transport', TRANSPORTS, 'tcp', 'upstream: tcp to the collector, http tunnel, or debug (JSON lines on stdout, no network)'),
  server_host: {
    name: 'server_host',
    type: 'comma list of hosts',
    default: '127.0.0.1',
    description: 'collector hosts, tried in order (fail-over); all share server_port',
    secret: false,
    parse: hostList,
    format: (v) => v.join(','),
  },
  server_port: intKey('server_port', 6600, 1, 65535, 'port', 'collector port (TCP, or its HTTP port with transport http)'),
  access_key: textKey(
    'access_key',
    'access key (from apm-collector keys create); set through APM_SIDECAR_ACCESS_KEY, the config file or access_key_file, never a flag',
    {
      secret: true,
      parse: (raw) => {
        noControlChars(raw.trim());
        return raw.trim();
      },
    },
  ),
  access_key_file: textKey('access_key_file', 'file holding the access key (trimmed); should be readable by its owner only', { type: 'path' }),
  data_dir: textKey('data_dir', 'directory of the SQLite retention file; empty = resolved at run time', { type: 'path' }),
  http: hostPortKey('http', '/healthz, /readyz and /metrics listener; empty = off'),
  profile: enumKey('profile', PROFILE_NAMES, 'appdynamics', 'reconnect behaviour: appdynamics (7x60000,300000) or whatap (3x5000-10000,stop)'),
  log_level: enumKey('log_level', LOG_LEVELS, 'info', 'log level (pino)'),
  agent_id: textKey('agent_id', 'name of this sidecar at the collector, stable across restarts; empty = host name (the pod name in Kubernetes)'),
  tcp_connection_timeout: duration('tcp_connection_timeout', 5000, 'time allowed to connect to the collector'),
  tcp_so_timeout: duration('tcp_so_timeout', 60000, 'a session that receives no bytes for this long is closed'),
  net_send_max_bytes: size('net_send_max_bytes', 5_242_880, 'largest upstream frame; queued items are packed into frames up to this size', 1024),
  net_send_queue1_size: size('net_send_queue1_size', 512, 'capacity of queue1 (metric packs)'),
  net_send_queue2_size: size('net_send_queue2_size', 1024, 'capacity of queue2 (traces, active stacks)'),
  ipc_max_frame_bytes: size('ipc_max_frame_bytes', 1_048_576, 'largest IPC frame accepted from a shim (checked before buffering)', 1024, 64 * 1024 * 1024),
  ipc_hello_timeout_ms: duration('ipc_hello_timeout_ms', 5000, 'an IPC connection that sends no Hello this long after connecting is closed', 10),
  ipc_max_unread_bytes: size(
    'ipc_max_unread_bytes',
    1_048_576,
    'bytes of replies an IPC peer may leave unread before it is disconnected',
    65536,
    256 * 1024 * 1024,
  ),
  flush_ms: duration('flush_ms', 1000, 'how often shims flush their aggregated metrics (pushed to shims)', 10),
  metric_interval_ms: duration('metric_interval_ms', 10000, 'reporting interval the sidecar merges shim points into', 10),
  retention_ms: duration('retention_ms', 180000, 'metrics are retained in SQLite while disconnected for at most this long'),
  standby_after_ms: duration('standby_after_ms', 60000, 'unreachable this long: standby (no transaction detection)'),
  mute_after_attempts: size('mute_after_attempts', 3, 'failed reconnect attempts before muted (instrumentation off)', 0),
  reconnect_schedule: {
    name: 'reconnect_schedule',
    type: 'schedule',
    default: '(from profile)',
    description: 'comma list of COUNTxMS or COUNTxMIN-MAX; the last item repeats unless followed by stop',
    secret: false,
    parse: schedule,
    format: str,
  },
  event_replay_window_ms: duration('event_replay_window_ms', 20000, 'events and snapshots of this last window are sent after a reconnect'),
  shutdown_timeout_ms: duration('shutdown_timeout_ms', 5000, 'on SIGTERM, time allowed to flush and commit before exiting'),
  ready_max_ack_age_ms: duration('ready_max_ack_age_ms', 30000, '/readyz fails when the last upstream ack is older than this'),
  dogstatsd_udp: hostPortKey('dogstatsd_udp', 'DogStatsD UDP listener; empty = off'),
  dogstatsd_socket: textKey('dogstatsd_socket', 'DogStatsD Unix datagram socket path; empty = off', { parse: unixSocketPath, type: 'path' }),
  retention_synchronous: enumKey(
    'retention_synchronous',
    ['NORMAL', 'FULL'] as const,
    'NORMAL',
    'SQLite synchronous for the retention (WAL): NORMAL survives a crash of the sidecar, FULL also power loss (an fsync per commit)',
  ),
  retention_max_bytes: size(
    'retention_max_bytes',
    268_435_456,
    'bytes of rows the retention may hold; beyond it the oldest retained metrics are dropped and counted disk_full',
    65_536,
  ),
  retention_min_free_bytes: size(
    'retention_min_free_bytes',
    67_108_864,
    'bytes kept free on the data_dir filesystem; below it the oldest retained metrics are dropped and counted disk_full',
    0,
  ),
  debug_output: {
    ...textKey('debug_output', "where the debug transport prints packs as JSON lines: '-' = stdout, else a file path", { type: 'path or -' }),
    default: '-',
  },
  max_series: size('max_series', 100_000, 'bound on distinct metric series held in aggregation'),
  max_shims: size('max_shims', 1024, 'bound on simultaneously connected shims'),
  shim_buffer_bytes: size('shim_buffer_bytes', 8_388_608, 'bytes a shim may buffer while the sidecar is away (sent to shims in the welcome)'),
};

/** Every key, in the order `apm-sidecar config` prints them. */
export const CONFIG_KEYS: readonly ConfigKeyDef[] = Object.values(KEY_DEFS) as ConfigKeyDef[];
export const CONFIG_KEY_NAMES: readonly ConfigKey[] = Object.keys(KEY_DEFS) as ConfigKey[];

export function isConfigKey(name: string): name is ConfigKey {
  return Object.hasOwn(KEY_DEFS, name);
}

export function configKeyDef<K extends ConfigKey>(name: K): ConfigKeyDef<SidecarConfig[K]> {
  return KEY_DEFS[name];
}

/** `server_port` → `--server-port`. */
export function flagName(key: string): string {
  return `--${key.replace(/_/g, '-')}`;
}

/** `server_port` → `APM_SIDECAR_SERVER_PORT`. */
export function envName(key: string): string {
  return ENV_PREFIX + key.toUpperCase();
}

// ---------------------------------------------------------------------------------------------
// Loading

export interface ConfigInput {
  /** Named flags keyed by config key (the CLI maps `--server-host` to `server_host`); undefined = not given. */
  readonly flags: Readonly<Record<string, string | undefined>>;
  /** `--set key=value`, in command-line order. */
  readonly sets: readonly string[];
  readonly env: Readonly<Record<string, string | undefined>>;
  /** `--config PATH`. */
  readonly configFile?: string | undefined;
}

export interface EffectiveConfig {
  readonly values: SidecarConfig;
  /** `default`, `profile:whatap`, `file:/etc/x.conf:12`, `file:/run/key` (access key), `env:APM_SIDECAR_X`, `flag:--x`, `flag:--set`. */
  readonly sources: Readonly<Record<ConfigKey, string>>;
  /** Not errors, but worth a log line (e.g. a group/world-readable access key file). */
  readonly warnings: readonly string[];
}

interface Candidate {
  readonly raw: string;
  readonly source: string;
}

/** Precedence levels, lowest first. */
enum Level {
  File = 0,
  Env = 1,
  Set = 2,
  Flag = 3,
}

const ACCESS_KEY_HINT = 'the access key must not be given on the command line (it would show in ps); use APM_SIDECAR_ACCESS_KEY or --access-key-file';

function unknownKey(key: string, source: string): ConfigError {
  const hint = suggest(key);
  return new ConfigError(key, source, `unknown key ${JSON.stringify(key)} (from ${source})${hint ? `; did you mean ${JSON.stringify(hint)}?` : ''}`);
}

/** The nearest key name, when it is plausibly a typo. */
function suggest(key: string): string | undefined {
  const norm = key.toLowerCase().replace(/-/g, '_');
  if (isConfigKey(norm)) return norm;
  let best: string | undefined;
  let bestDistance = 3;
  for (const name of CONFIG_KEY_NAMES) {
    const d = editDistance(norm, name);
    if (d < bestDistance) {
      best = name;
      bestDistance = d;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min((prev[j] as number) + 1, (cur[j - 1] as number) + 1, (prev[j - 1] as number) + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length] as number;
}

function quoteForMessage(def: ConfigKeyDef, raw: string): string {
  if (def.secret) return '(secret value)';
  const shown = raw.length > 80 ? `${raw.slice(0, 77)}...` : raw;
  return JSON.stringify(shown);
}

/** Parses one candidate with its key's validator; failures name the key and the source. */
function parseValue(def: ConfigKeyDef, cand: Candidate): unknown {
  try {
    return def.parse(cand.raw);
  } catch (err) {
    if (err instanceof InvalidValue) {
      throw new ConfigError(def.name, cand.source, `${def.name}: ${quoteForMessage(def, cand.raw)} ${err.problem} (from ${cand.source})`);
    }
    throw err;
  }
}

/**
 * Parses a config file's text: `key = value` lines, `#` comments (whole lines, or after
 * whitespace in an unquoted value), blank lines, optional "double" or 'single' quotes around a
 * value (kept literally, no escapes). `path` is only used in source strings.
 */
export function parseConfigFile(content: string, path: string): Array<{ key: string; raw: string; source: string }> {
  const entries: Array<{ key: string; raw: string; source: string }> = [];
  const lines = content.replace(/^\uFEFF/, '').split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const source = `file:${path}:${i + 1}`;
    const line = (lines[i] as string).trim();
    if (line === '' || line.startsWith('#')) continue;
    const eq = line.indexOf('=');
    if (eq < 0) {
      throw new ConfigError(
        line,
        source,
        `expected "key = value", got ${JSON.stringify(line.length > 80 ? `${line.slice(0, 77)}...` : line)} (from ${source})`,
      );
    }
    const key = line.slice(0, eq).trim();
    if (key === '') throw new ConfigError('', source, `missing key before "=" (from ${source})`);
    let value = line.slice(eq + 1).trim();
    const q = value[0];
    if (q === '"' || q === "'") {
      const end = value.indexOf(q, 1);
      if (end < 0) throw new ConfigError(key, source, `${key}: unterminated ${q} quote (from ${source})`);
      const rest = value.slice(end + 1).trim();
      if (rest !== '' && !rest.startsWith('#')) {
        throw new ConfigError(key, source, `${key}: unexpected text after the closing quote (from ${source})`);
      }
      value = value.slice(1, end);
    } else {
      const comment = value.search(/\s#/);
      if (comment >= 0) value = value.slice(0, comment).trimEnd();
    }
    entries.push({ key, raw: value, source });
  }
  return entries;
}

/** `ENOENT: no such file or directory, open '/x'` → `ENOENT: no such file or directory` (the path is named anyway). */
function fsReason(err: unknown): string {
  return err instanceof Error ? err.message.replace(/, \w+ '.*'$/, '') : String(err);
}

function readConfigFile(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    const source = 'flag:--config';
    throw new ConfigError('config', source, `config: cannot read config file ${JSON.stringify(path)}: ${fsReason(err)} (from ${source})`);
  }
}

function isGroupOrWorldReadable(path: string): boolean {
  try {
    return (statSync(path).mode & 0o044) !== 0;
  } catch {
    return false;
  }
}

/** Builds the effective configuration. Throws `ConfigError` (code `ERR_CONFIG`) on any unknown key or bad value. */
export function loadConfig(input: ConfigInput): EffectiveConfig {
  // For each key, the winning raw text and its precedence level.
  const chosen = new Map<ConfigKey, Candidate & { level: Level }>();
  const offer = (key: ConfigKey, level: Level, cand: Candidate): void => {
    const prev = chosen.get(key);
    if (prev === undefined || level >= prev.level) chosen.set(key, { ...cand, level });
  };
  const warnings: string[] = [];

  if (input.configFile !== undefined) {
    const path = input.configFile;
    const entries = parseConfigFile(readConfigFile(path), path);
    for (const e of entries) {
      if (!isConfigKey(e.key)) throw unknownKey(e.key, e.source);
      offer(e.key, Level.File, e);
    }
    if (entries.some((e) => e.key === 'access_key') && isGroupOrWorldReadable(path)) {
      warnings.push(`config file ${path} holds access_key and is readable by group or others; chmod 600 it`);
    }
  }

  for (const name of Object.keys(input.env).sort()) {
    const raw = input.env[name];
    if (!name.startsWith(ENV_PREFIX) || raw === undefined || SHIM_ONLY_ENV.includes(name)) continue;
    const source = `env:${name}`;
    const key = name.slice(ENV_PREFIX.length).toLowerCase();
    if (!isConfigKey(key)) throw unknownKey(key, source);
    if (envName(key) !== name) {
      throw new ConfigError(key, source, `${key}: environment variable names are upper-case, use ${envName(key)} (from ${source})`);
    }
    offer(key, Level.Env, { raw, source });
  }

  for (const item of input.sets) {
    const source = 'flag:--set';
    const eq = item.indexOf('=');
    if (eq < 0) throw new ConfigError(item, source, `--set ${JSON.stringify(item)}: expected key=value (from ${source})`);
    const key = item.slice(0, eq).trim();
    if (!isConfigKey(key)) throw unknownKey(key, source);
    if (key === 'access_key') throw new ConfigError(key, source, `access_key: ${ACCESS_KEY_HINT} (from ${source})`);
    offer(key, Level.Set, { raw: item.slice(eq + 1).trim(), source });
  }

  for (const key of Object.keys(input.flags)) {
    const raw = input.flags[key];
    if (raw === undefined) continue;
    const source = `flag:${flagName(key)}`;
    if (!isConfigKey(key)) throw unknownKey(key, source);
    if (key === 'access_key') throw new ConfigError(key, source, `access_key: ${ACCESS_KEY_HINT} (from ${source})`);
    offer(key, Level.Flag, { raw, source });
  }

  // Validate everything given, then fill in the profile and the defaults.
  const values: Record<string, unknown> = {};
  const sources: Record<string, string> = {};
  for (const def of CONFIG_KEYS) {
    const cand = chosen.get(def.name);
    if (cand !== undefined) {
      values[def.name] = parseValue(def, cand);
      sources[def.name] = cand.source;
    }
  }
  for (const def of CONFIG_KEYS) {
    if (def.name in values) continue;
    if (def.name === 'reconnect_schedule') {
      const profile = values.profile as ProfileName | undefined;
      const name: ProfileName = profile ?? (KEY_DEFS.profile.default as ProfileName);
      values[def.name] = PROFILES[name].reconnect_schedule;
      sources[def.name] = `profile:${name}`;
      continue;
    }
    values[def.name] = def.parse(def.default);
    sources[def.name] = 'default';
  }

  // The access key file supplies access_key; both at once is ambiguous, so refuse it.
  const keyFile = values.access_key_file as string;
  if (keyFile !== '') {
    const keyFileSource = sources.access_key_file as string;
    if (sources.access_key !== 'default') {
      throw new ConfigError(
        'access_key',
        sources.access_key as string,
        `access_key: given both directly (from ${sources.access_key}) and through access_key_file (from ${keyFileSource}); give only one`,
      );
    }
    let content: string;
    try {
      content = readFileSync(keyFile, 'utf8');
    } catch (err) {
      throw new ConfigError(
        'access_key_file',
        keyFileSource,
        `access_key_file: cannot read ${JSON.stringify(keyFile)}: ${fsReason(err)} (from ${keyFileSource})`,
      );
    }
    const cand = { raw: content.trim(), source: `file:${keyFile}` };
    if (cand.raw === '') {
      throw new ConfigError('access_key_file', keyFileSource, `access_key_file: ${JSON.stringify(keyFile)} is empty (from ${keyFileSource})`);
    }
    values.access_key = parseValue(KEY_DEFS.access_key, cand);
    sources.access_key = cand.source;
    if (isGroupOrWorldReadable(keyFile)) {
      warnings.push(`access_key_file ${keyFile} is readable by group or others; chmod 600 it`);
    }
  }

  if (values.agent_id === '') values.agent_id = hostname();

  const reconnectText = values.reconnect_schedule as string;
  values.reconnect_schedule_parsed = parseReconnectSchedule(reconnectText);

  return {
    values: values as unknown as SidecarConfig,
    sources: sources as Record<ConfigKey, string>,
    warnings,
  };
}

// ---------------------------------------------------------------------------------------------
// Printing (`apm-sidecar config`). Secrets are masked in both forms.

function maskSecret(value: string): string {
  return value === '' ? '(unset)' : `******** (${value.length} chars)`;
}

/** A value as it would be written in a config file: quoted when empty or when it has spaces or `#`. */
function displayValue(def: ConfigKeyDef, value: unknown): string {
  if (def.secret) return maskSecret(value as string);
  const textValue = def.format(value);
  return textValue === '' || /[\s#"']/.test(textValue) ? JSON.stringify(textValue) : textValue;
}

/** One line per key: `key = value    # source`, aligned; secrets masked. */
export function formatConfig(eff: EffectiveConfig): string {
  const rows = CONFIG_KEYS.map((def) => {
    const value = (eff.values as unknown as Record<string, unknown>)[def.name];
    return { left: `${def.name} = ${displayValue(def, value)}`, source: eff.sources[def.name] };
  });
  const width = Math.max(...rows.map((r) => r.left.length));
  return `${rows.map((r) => `${r.left.padEnd(width)}    # ${r.source}`).join('\n')}\n`;
}

export interface ConfigJson {
  /** Typed values (numbers as numbers, server_host as an array, HOST:PORT keys as objects or null); secrets masked. */
  readonly values: Record<ConfigKey, unknown>;
  readonly sources: Record<ConfigKey, string>;
  readonly warnings: string[];
}

/** A JSON-serialisable view of the effective configuration; secrets masked. */
export function configToJson(eff: EffectiveConfig): ConfigJson {
  const values = {} as Record<ConfigKey, unknown>;
  const sources = {} as Record<ConfigKey, string>;
  for (const def of CONFIG_KEYS) {
    const value = (eff.values as unknown as Record<string, unknown>)[def.name];
    values[def.name] = def.secret ? maskSecret(value as string) : value;
    sources[def.name] = eff.sources[def.name];
  }
  return { values, sources, warnings: [...eff.warnings] };
}
