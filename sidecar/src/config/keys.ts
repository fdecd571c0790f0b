/**
 * The key table: every configuration key with its type, default, description, parser and
 * printer, and the names a key has as a flag and as an environment variable.
 */
import { LOG_LEVELS, type LogLevelName } from '@apm-sidecar/proto';
import { PROFILES, type ProfileName, type ReconnectSchedule } from '../reconnect-schedule';
import { type HostPort, MAX_TIMER_MS, formatHostPort, hostList, hostPortOrOff, integer, noControlChars, oneOf, schedule, text, unixSocketPath } from './values';

export type { HostPort } from './values';

export const ENV_PREFIX = 'APM_SIDECAR_';
/** Variables with the prefix that configure the shim, not the sidecar: an environment shared by both must not stop the sidecar. */
export const SHIM_ONLY_ENV: readonly string[] = ['APM_SIDECAR_SOCKET_OWNER'];

export type Transport = 'tcp' | 'http' | 'debug';
export type LogLevel = LogLevelName;

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
  /** The `http` listener: a request's headers must arrive whole within this (slow-header clients are cut). */
  readonly http_headers_timeout_ms: number;
  /** The `http` listener: a whole request (headers and body) must arrive within this. */
  readonly http_request_timeout_ms: number;
  /** The `http` listener: an idle keep-alive connection is closed after this. */
  readonly http_keep_alive_timeout_ms: number;
  /** The `http` listener: larger request headers are answered 431. */
  readonly http_max_header_bytes: number;
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
  http_headers_timeout_ms: duration(
    'http_headers_timeout_ms',
    10000,
    'the http listener closes a connection whose request headers are not complete this long after they began (408); at most http_request_timeout_ms',
    10,
  ),
  http_request_timeout_ms: duration(
    'http_request_timeout_ms',
    30000,
    'the http listener closes a connection whose whole request has not arrived this long after it began (408)',
    10,
  ),
  http_keep_alive_timeout_ms: duration('http_keep_alive_timeout_ms', 5000, 'the http listener closes a keep-alive connection idle this long', 10),
  http_max_header_bytes: size(
    'http_max_header_bytes',
    16384,
    'the http listener answers larger request headers (all lines together) with 431',
    1024,
    1_048_576,
  ),
  profile: enumKey('profile', PROFILE_NAMES, 'appdynamics', 'reconnect behaviour: appdynamics (7x60000,300000) or whatap (3x5000-10000,stop)'),
  log_level: enumKey('log_level', LOG_LEVELS, 'info', 'log level (pino)'),
  agent_id: textKey('agent_id', 'name of this sidecar at the collector, stable across restarts; empty = host name (the pod name in Kubernetes)'),
  tcp_connection_timeout: duration('tcp_connection_timeout', 5000, 'time allowed to connect to the collector'),
  tcp_so_timeout: duration('tcp_so_timeout', 60000, 'a session that receives no bytes for this long is closed'),
  net_send_max_bytes: size('net_send_max_bytes', 5_242_880, 'largest upstream frame; queued items are packed into frames up to this size', 1024),
  net_send_queue1_size: size('net_send_queue1_size', 512, 'packs queue1 holds in memory (metric packs beyond it wait in the retention)'),
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
