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
 *
 * This file is the loading (precedence, the config file, the access-key file) and the printing;
 * the key table is config/keys.ts, the value parsers config/values.ts.
 */
import { readFileSync, statSync } from 'node:fs';
import { hostname } from 'node:os';
import { ApmError } from '@apm-sidecar/proto';
import { PROFILES, type ProfileName, parseReconnectSchedule } from './reconnect-schedule';
import {
  CONFIG_KEYS,
  CONFIG_KEY_NAMES,
  type ConfigKey,
  type ConfigKeyDef,
  ENV_PREFIX,
  SHIM_ONLY_ENV,
  type SidecarConfig,
  configKeyDef,
  envName,
  flagName,
  isConfigKey,
} from './config/keys';
import { InvalidValue } from './config/values';

export * from './config/keys';
export { InvalidValue } from './config/values';

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
      const name: ProfileName = profile ?? (configKeyDef('profile').default as ProfileName);
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
    values.access_key = parseValue(configKeyDef('access_key'), cand);
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
