import { ApmError } from '@apm-sidecar/proto';

/**
 * Collector settings given with `--set key=value` (every duration in milliseconds,
 * so tests can run the liveness and license timeline in seconds).
 */
export interface CollectorSettings {
  idle_ping_ms: number;
  tunnel_session_timeout_ms: number;
  disconnected_retention_ms: number;
  stall_after_ms: number;
  license_release_ms: number;
  rollup_grace_ms: number;
  max_frame_bytes: number;
  key_revocation_poll_ms: number;
  handshake_timeout_ms: number;
  max_connections: number;
  max_connections_per_ip: number;
  http_headers_timeout_ms: number;
  http_request_timeout_ms: number;
  http_keep_alive_timeout_ms: number;
  http_max_header_bytes: number;
  store_retention_days: number;
  store_prune_interval_ms: number;
  store_prune_batch_rows: number;
  collector_heartbeat_ms: number;
  collector_dead_after_ms: number;
}
export type SettingKey = keyof CollectorSettings;

interface Spec {
  def: number;
  min: number;
  max: number;
  help: string;
}

const DAY = 86_400_000;

export const SETTINGS: Record<SettingKey, Spec> = {
  idle_ping_ms: { def: 120_000, min: 1, max: DAY, help: 'ping a session idle this long' },
  tunnel_session_timeout_ms: { def: 60_000, min: 1, max: DAY, help: 'an HTTP-tunnel session expires after this long without a request' },
  disconnected_retention_ms: { def: 1_800_000, min: 0, max: 365 * DAY, help: 'a disconnected agent stays listed this long' },
  stall_after_ms: { def: 60_000, min: 1, max: DAY, help: 'a connected agent sending no data this long is stalled' },
  license_release_ms: { def: 300_000, min: 0, max: 365 * DAY, help: 'free a license after its agent has been disconnected this long' },
  rollup_grace_ms: { def: 120_000, min: 0, max: DAY, help: 'a minute is final this long after it ends' },
  max_frame_bytes: { def: 8_388_608, min: 1024, max: 1024 * 1024 * 1024, help: 'largest agent frame accepted' },
  key_revocation_poll_ms: { def: 250, min: 10, max: 60_000, help: 'read revoked access keys this often; their sessions end' },
  handshake_timeout_ms: { def: 10_000, min: 1, max: DAY, help: 'an agent connection not through the handshake this long is closed' },
  max_connections: { def: 10_000, min: 1, max: 10_000_000, help: 'agent connections and tunnel sessions held at once; more are closed at accept' },
  http_headers_timeout_ms: {
    def: 10_000,
    min: 10,
    max: DAY,
    help: 'the HTTP port closes a connection whose request headers are not complete this long after they began (408); at most http_request_timeout_ms',
  },
  http_request_timeout_ms: {
    def: 60_000,
    min: 10,
    max: DAY,
    help: 'the HTTP port closes a connection whose whole request (a tunnel body too) has not arrived this long after it began (408)',
  },
  http_keep_alive_timeout_ms: { def: 5_000, min: 10, max: DAY, help: 'the HTTP port closes a keep-alive connection idle this long' },
  http_max_header_bytes: { def: 16_384, min: 1024, max: 1024 * 1024, help: 'the HTTP port answers larger request headers (all lines together) with 431' },
  max_connections_per_ip: { def: 256, min: 1, max: 10_000_000, help: 'agent connections and tunnel sessions held at once from one address' },
  store_retention_days: {
    def: 15,
    min: 1,
    max: 3650,
    help: 'stored points, rollups, packs, traces, events, snapshots and active stacks older than this many days are deleted',
  },
  store_prune_interval_ms: { def: 60_000, min: 10, max: DAY, help: 'look for stored data older than store_retention_days this often' },
  store_prune_batch_rows: {
    def: 5_000,
    min: 1,
    max: 1_000_000,
    help: 'rows deleted per transaction while pruning; ingest waits at most one such batch',
  },
  collector_heartbeat_ms: { def: 5_000, min: 10, max: DAY, help: 'each collector sharing a store writes its heartbeat this often' },
  collector_dead_after_ms: {
    def: 15_000,
    min: 20,
    max: DAY,
    help: 'a collector whose heartbeat is older than this is dead and its agents disconnected; more than collector_heartbeat_ms',
  },
};

/** A bad `--set` (unknown key, malformed pair or value out of range). The message names the key. */
export class SettingError extends ApmError {
  readonly key: string;
  constructor(key: string, message: string) {
    super('ERR_SETTING', message);
    this.key = key;
  }
}

export function defaultSettings(): CollectorSettings {
  const out = {} as CollectorSettings;
  for (const k of Object.keys(SETTINGS) as SettingKey[]) out[k] = SETTINGS[k].def;
  return out;
}

function isKey(k: string): k is SettingKey {
  return Object.hasOwn(SETTINGS, k);
}

/** Apply `key=value` pairs over the defaults. Throws SettingError naming the key. */
export function parseSettings(pairs: readonly string[]): CollectorSettings {
  const out = defaultSettings();
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new SettingError(pair, `--set ${JSON.stringify(pair)}: expected key=value`);
    const key = pair.slice(0, eq).trim();
    const raw = pair.slice(eq + 1).trim();
    if (!isKey(key)) throw new SettingError(key, `--set ${key}: unknown key (known: ${Object.keys(SETTINGS).join(', ')})`);
    const spec = SETTINGS[key];
    if (!/^\d+$/.test(raw)) throw new SettingError(key, `--set ${key}: ${JSON.stringify(raw)} is not a non-negative integer`);
    const v = Number(raw);
    if (!Number.isSafeInteger(v) || v < spec.min || v > spec.max)
      throw new SettingError(key, `--set ${key}: ${raw} is out of range [${spec.min}, ${spec.max}]`);
    out[key] = v;
  }
  checkRelations(out);
  return out;
}

/**
 * Settings that only make sense together. A collector whose heartbeat interval is not shorter
 * than the age at which others declare it dead would be reaped while alive.
 */
function checkRelations(s: CollectorSettings): void {
  if (s.collector_dead_after_ms <= s.collector_heartbeat_ms)
    throw new SettingError(
      'collector_dead_after_ms',
      `--set collector_dead_after_ms: ${s.collector_dead_after_ms} must be more than collector_heartbeat_ms (${s.collector_heartbeat_ms})`,
    );
}
