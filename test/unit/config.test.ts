import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApmError } from '@apm-sidecar/proto';
import { CONFIG_KEYS, CONFIG_KEY_NAMES, ConfigError, type ConfigInput, configToJson, formatConfig, loadConfig, parseConfigFile } from '@apm-sidecar/sidecar';

const dir = mkdtempSync(join(tmpdir(), 'apm-config-test-'));
after(() => rmSync(dir, { recursive: true, force: true }));

let fileCounter = 0;
/** Writes a file in the test directory and returns its path. */
function file(content: string, mode = 0o600): string {
  const path = join(dir, `f${++fileCounter}.conf`);
  writeFileSync(path, content);
  chmodSync(path, mode);
  return path;
}

function load(input: Partial<ConfigInput> = {}) {
  return loadConfig({ flags: {}, sets: [], env: {}, ...input });
}

/** Asserts that `fn` throws a ConfigError for `key` from `source` whose message names both. */
function assertConfigError(fn: () => unknown, key: string, source: string, pattern?: RegExp): ConfigError {
  let caught: unknown;
  assert.throws(fn, (err: unknown) => {
    caught = err;
    return true;
  });
  assert.ok(caught instanceof ConfigError, `expected ConfigError, got ${String(caught)}`);
  assert.ok(caught instanceof ApmError);
  assert.equal(caught.code, 'ERR_CONFIG');
  assert.equal(caught.key, key);
  assert.equal(caught.source, source);
  assert.ok(caught.message.includes(key), `message names the key: ${caught.message}`);
  assert.ok(caught.message.includes(source), `message names the source: ${caught.message}`);
  if (pattern) assert.match(caught.message, pattern);
  return caught;
}

const SECRET = 'prj1.Zm9vYmFyYmF6cXV4c2VjcmV0c2VjcmV0c2VjcmV0MDA=';

describe('config: defaults', () => {
  it('gives every documented default, typed, with source default', () => {
    const eff = load();
    assert.deepEqual(
      { ...eff.values, reconnect_schedule_parsed: undefined },
      {
        socket: '',
        socket_group: '',
        transport: 'tcp',
        server_host: ['127.0.0.1'],
        server_port: 6600,
        access_key: '',
        access_key_file: '',
        data_dir: '',
        http: null,
        http_headers_timeout_ms: 10000,
        http_request_timeout_ms: 30000,
        http_keep_alive_timeout_ms: 5000,
        http_max_header_bytes: 16384,
        profile: 'appdynamics',
        log_level: 'info',
        agent_id: hostname(),
        tcp_connection_timeout: 5000,
        tcp_so_timeout: 60000,
        net_send_max_bytes: 5242880,
        net_send_queue1_size: 512,
        net_send_queue2_size: 1024,
        ipc_max_frame_bytes: 1048576,
        ipc_hello_timeout_ms: 5000,
        ipc_max_unread_bytes: 1048576,
        flush_ms: 1000,
        metric_interval_ms: 10000,
        retention_ms: 180000,
        standby_after_ms: 60000,
        mute_after_attempts: 3,
        reconnect_schedule: '7x60000,300000',
        event_replay_window_ms: 20000,
        shutdown_timeout_ms: 5000,
        ready_max_ack_age_ms: 30000,
        dogstatsd_udp: null,
        dogstatsd_socket: '',
        retention_synchronous: 'NORMAL',
        retention_max_bytes: 268435456,
        retention_min_free_bytes: 67108864,
        debug_output: '-',
        max_series: 100000,
        max_shims: 1024,
        shim_buffer_bytes: 8388608,
        reconnect_schedule_parsed: undefined,
      },
    );
    for (const key of CONFIG_KEY_NAMES) {
      assert.equal(eff.sources[key], key === 'reconnect_schedule' ? 'profile:appdynamics' : 'default', key);
    }
    assert.deepEqual(eff.values.reconnect_schedule_parsed, {
      steps: [
        { count: 7, minMs: 60000, maxMs: 60000 },
        { count: 1, minMs: 300000, maxMs: 300000 },
      ],
      then: 'repeat',
    });
    assert.deepEqual(eff.warnings, []);
  });

  it('documents every key in the table, and each non-profile default passes its own validator', () => {
    assert.deepEqual(
      CONFIG_KEYS.map((k) => k.name),
      CONFIG_KEY_NAMES,
    );
    for (const def of CONFIG_KEYS) {
      assert.ok(def.description.length > 10, `${def.name} has a description`);
      assert.ok(def.type.length > 0, `${def.name} has a type`);
      assert.equal(def.secret, def.name === 'access_key', `${def.name} secret flag`);
      if (def.name === 'reconnect_schedule') continue;
      assert.equal(def.format(def.parse(def.default)), def.default, `${def.name} default round-trips`);
    }
  });

  it('keeps an explicit agent_id instead of the host name', () => {
    assert.equal(load({ env: { APM_SIDECAR_AGENT_ID: 'checkout-7f9c' } }).values.agent_id, 'checkout-7f9c');
  });
});

describe('config: precedence', () => {
  it('a named flag beats --set', () => {
    const eff = load({ flags: { server_port: '7001' }, sets: ['server_port=7002'] });
    assert.equal(eff.values.server_port, 7001);
    assert.equal(eff.sources.server_port, 'flag:--server-port');
  });

  it('a later --set beats an earlier one', () => {
    const eff = load({ sets: ['server_port=7001', 'server_port=7002'] });
    assert.equal(eff.values.server_port, 7002);
    assert.equal(eff.sources.server_port, 'flag:--set');
  });

  it('a named flag beats the environment', () => {
    const eff = load({ flags: { server_host: 'flag.example' }, env: { APM_SIDECAR_SERVER_HOST: 'env.example' } });
    assert.deepEqual(eff.values.server_host, ['flag.example']);
    assert.equal(eff.sources.server_host, 'flag:--server-host');
  });

  it('--set beats the environment', () => {
    const eff = load({ sets: ['flush_ms=20'], env: { APM_SIDECAR_FLUSH_MS: '30' } });
    assert.equal(eff.values.flush_ms, 20);
    assert.equal(eff.sources.flush_ms, 'flag:--set');
  });

  it('the environment beats the config file', () => {
    const path = file('server_port = 7001\n');
    const eff = load({ env: { APM_SIDECAR_SERVER_PORT: '7002' }, configFile: path });
    assert.equal(eff.values.server_port, 7002);
    assert.equal(eff.sources.server_port, 'env:APM_SIDECAR_SERVER_PORT');
  });

  it('the config file beats the profile', () => {
    const path = file('profile = whatap\nreconnect_schedule = 2x100,stop\n');
    const eff = load({ configFile: path });
    assert.equal(eff.values.reconnect_schedule, '2x100,stop');
    assert.equal(eff.sources.reconnect_schedule, `file:${path}:2`);
  });

  it('the profile beats the default', () => {
    const eff = load({ flags: { profile: 'whatap' } });
    assert.equal(eff.values.reconnect_schedule, '3x5000-10000,stop');
    assert.equal(eff.sources.reconnect_schedule, 'profile:whatap');
    assert.deepEqual(eff.values.reconnect_schedule_parsed, { steps: [{ count: 3, minMs: 5000, maxMs: 10000 }], then: 'stop' });
  });

  it('the config file beats the default', () => {
    const path = file('retention_ms = 5000\n');
    const eff = load({ configFile: path });
    assert.equal(eff.values.retention_ms, 5000);
    assert.equal(eff.sources.retention_ms, `file:${path}:1`);
  });

  it('a later line of the config file beats an earlier one', () => {
    const path = file('server_port = 7001\nserver_port = 7002\n');
    const eff = load({ configFile: path });
    assert.equal(eff.values.server_port, 7002);
    assert.equal(eff.sources.server_port, `file:${path}:2`);
  });

  it('reports the source of every level in one load', () => {
    const path = file('# header\n\nlog_level = debug\n');
    const eff = load({
      flags: { transport: 'debug', socket: undefined },
      sets: ['max_shims=8'],
      env: { APM_SIDECAR_DATA_DIR: '/var/lib/apm', PATH: '/usr/bin' },
      configFile: path,
    });
    assert.equal(eff.sources.transport, 'flag:--transport');
    assert.equal(eff.sources.max_shims, 'flag:--set');
    assert.equal(eff.sources.data_dir, 'env:APM_SIDECAR_DATA_DIR');
    assert.equal(eff.sources.log_level, `file:${path}:3`);
    assert.equal(eff.sources.reconnect_schedule, 'profile:appdynamics');
    assert.equal(eff.sources.socket, 'default', 'a flag given as undefined is not given');
    assert.equal(eff.values.transport, 'debug');
    assert.equal(eff.values.max_shims, 8);
    assert.equal(eff.values.data_dir, '/var/lib/apm');
    assert.equal(eff.values.log_level, 'debug');
  });
});

describe('config: profiles', () => {
  it('profile whatap changes reconnect_schedule', () => {
    const eff = load({ env: { APM_SIDECAR_PROFILE: 'whatap' } });
    assert.equal(eff.values.profile, 'whatap');
    assert.equal(eff.values.reconnect_schedule, '3x5000-10000,stop');
    assert.equal(eff.sources.reconnect_schedule, 'profile:whatap');
  });

  it('an explicit reconnect_schedule wins over the profile, whatever level each comes from', () => {
    const eff = load({ flags: { profile: 'whatap' }, env: { APM_SIDECAR_RECONNECT_SCHEDULE: '4x50,stop' } });
    assert.equal(eff.values.profile, 'whatap');
    assert.equal(eff.values.reconnect_schedule, '4x50,stop');
    assert.equal(eff.sources.reconnect_schedule, 'env:APM_SIDECAR_RECONNECT_SCHEDULE');
    assert.deepEqual(eff.values.reconnect_schedule_parsed, { steps: [{ count: 4, minMs: 50, maxMs: 50 }], then: 'stop' });
  });

  it('stores reconnect_schedule in canonical form', () => {
    assert.equal(load({ sets: ['reconnect_schedule= 7x60000 , 1x300000'] }).values.reconnect_schedule, '7x60000,300000');
  });
});

describe('config: values are typed', () => {
  it('parses server_host as a trimmed list and HOST:PORT keys as objects', () => {
    const eff = load({
      sets: ['server_host=c1.example, 10.0.0.2 ,[::1]', 'http=0.0.0.0:0', 'dogstatsd_udp=[::1]:8125'],
    });
    assert.deepEqual(eff.values.server_host, ['c1.example', '10.0.0.2', '::1']);
    assert.deepEqual(eff.values.http, { host: '0.0.0.0', port: 0 });
    assert.deepEqual(eff.values.dogstatsd_udp, { host: '::1', port: 8125 });
  });

  it('accepts the bounds of bounded keys', () => {
    const eff = load({
      sets: ['server_port=65535', 'ipc_max_frame_bytes=67108864', 'net_send_max_bytes=1024', 'flush_ms=10', 'retention_ms=0'],
    });
    assert.equal(eff.values.server_port, 65535);
    assert.equal(eff.values.ipc_max_frame_bytes, 64 * 1024 * 1024);
    assert.equal(eff.values.net_send_max_bytes, 1024);
    assert.equal(eff.values.flush_ms, 10);
    assert.equal(eff.values.retention_ms, 0);
  });
});

describe('config: validation', () => {
  it('names key and source: server_port "abc" from the environment', () => {
    const err = assertConfigError(() => load({ env: { APM_SIDECAR_SERVER_PORT: 'abc' } }), 'server_port', 'env:APM_SIDECAR_SERVER_PORT');
    assert.equal(err.message, 'server_port: "abc" is not an integer (from env:APM_SIDECAR_SERVER_PORT)');
  });

  const longPath = `/tmp/${'s'.repeat(120)}.sock`;
  const bad: Array<[string, string, RegExp]> = [
    ['socket', longPath, /Unix socket path may be at most 107/],
    ['socket_group', 'wheel\nroot', /control character/],
    ['transport', 'udp', /is not one of tcp, http, debug/],
    ['server_host', '', /is empty/],
    ['server_host', 'a.example,,b.example', /empty host/],
    ['server_host', 'collector:6600', /has a port/],
    ['server_host', 'bad host!', /invalid host/],
    ['server_port', '0', /less than the minimum 1/],
    ['server_port', '65536', /greater than the maximum 65535/],
    ['server_port', '66.5', /is not an integer/],
    ['access_key_file', 'a\u0000b', /control character/],
    ['data_dir', '/var/lib/\u0007', /control character/],
    ['http', 'localhost', /not HOST:PORT/],
    ['http', 'localhost:99999', /greater than 65535/],
    ['http', ':8080', /empty host/],
    ['profile', 'newrelic', /is not one of appdynamics, whatap/],
    ['log_level', 'verbose', /is not one of trace, debug, info, warn, error, fatal, silent/],
    ['agent_id', 'pod\t1', /control character/],
    ['tcp_connection_timeout', '-1', /is negative/],
    ['tcp_so_timeout', '1.5', /is not an integer/],
    ['net_send_max_bytes', '1023', /less than the minimum 1024/],
    ['net_send_queue1_size', '0', /less than the minimum 1/],
    ['net_send_queue2_size', 'many', /is not an integer/],
    ['ipc_max_frame_bytes', '1023', /less than the minimum 1024/],
    ['ipc_max_frame_bytes', '67108865', /greater than the maximum 67108864/],
    ['ipc_hello_timeout_ms', '9', /less than the minimum 10/],
    ['ipc_max_unread_bytes', '65535', /less than the minimum 65536/],
    ['flush_ms', '9', /less than the minimum 10/],
    ['metric_interval_ms', '9', /less than the minimum 10/],
    ['retention_ms', '1e3', /is not an integer/],
    ['standby_after_ms', '2147483648', /greater than the maximum 2147483647/],
    ['mute_after_attempts', '-3', /is negative/],
    ['reconnect_schedule', 'stop', /not a valid reconnect schedule: "stop" cannot be the first item/],
    ['reconnect_schedule', '0x5000', /count is 0/],
    ['event_replay_window_ms', 'twenty', /is not an integer/],
    ['shutdown_timeout_ms', '', /is not an integer/],
    ['ready_max_ack_age_ms', '-0.5', /is not an integer/],
    ['dogstatsd_udp', '8125', /not HOST:PORT/],
    ['dogstatsd_socket', longPath, /Unix socket path may be at most 107/],
    ['max_series', '0', /less than the minimum 1/],
    ['max_shims', '0', /less than the minimum 1/],
    ['shim_buffer_bytes', '0', /less than the minimum 1/],
  ];
  for (const [key, value, pattern] of bad) {
    it(`rejects ${key}=${JSON.stringify(value)} naming key and source`, () => {
      const err = assertConfigError(() => load({ sets: [`${key}=${value}`] }), key, 'flag:--set', pattern);
      assert.ok(err.message.startsWith(`${key}: `), err.message);
    });
  }

  it('reports a bad value from a config file with its line number', () => {
    const path = file('# comment\nserver_port = 6600\ntransport = smoke-signals\n');
    assertConfigError(() => load({ configFile: path }), 'transport', `file:${path}:3`, /is not one of/);
  });

  it('reports a bad value from a named flag with the flag name', () => {
    assertConfigError(() => load({ flags: { server_port: 'x' } }), 'server_port', 'flag:--server-port', /is not an integer/);
  });

  it('does not reject a bad value that a higher level overrides (only the winning value is used)', () => {
    // A bad value that is overridden never reaches the program, so it is not an error.
    const path = file('server_port = nonsense\n');
    assert.equal(load({ configFile: path, flags: { server_port: '7000' } }).values.server_port, 7000);
  });

  it('rejects --set without "="', () => {
    assertConfigError(() => load({ sets: ['server_port'] }), 'server_port', 'flag:--set', /expected key=value/);
  });
});

describe('config: unknown keys', () => {
  it('from the config file, with the line number', () => {
    const path = file('server_port = 6600\n\nfoo = 1\n');
    const err = assertConfigError(() => load({ configFile: path }), 'foo', `file:${path}:3`);
    assert.equal(err.message, `unknown key "foo" (from file:${path}:3)`);
  });

  it('from --set, suggesting the key that was meant', () => {
    const err = assertConfigError(() => load({ sets: ['server-port=7000'] }), 'server-port', 'flag:--set');
    assert.match(err.message, /did you mean "server_port"/);
  });

  it('from an APM_SIDECAR_ environment variable', () => {
    const err = assertConfigError(() => load({ env: { APM_SIDECAR_FOO: '1' } }), 'foo', 'env:APM_SIDECAR_FOO');
    assert.equal(err.message, 'unknown key "foo" (from env:APM_SIDECAR_FOO)');
  });

  it('from a named flag', () => {
    assertConfigError(() => load({ flags: { retension_ms: '1' } }), 'retension_ms', 'flag:--retension-ms', /did you mean "retention_ms"/);
  });

  it('ignores APM_SIDECAR_SOCKET_OWNER, which configures the shim', () => {
    const eff = load({ env: { APM_SIDECAR_SOCKET_OWNER: '10001' } });
    assert.equal(eff.values.socket, '');
  });

  it('ignores environment variables without the prefix, and takes APM_SIDECAR_ACCESS_KEY as a key', () => {
    const eff = load({ env: { HOME: '/root', APM_SIDECARX: '1', APM_SIDECAR_ACCESS_KEY: SECRET } });
    assert.equal(eff.values.access_key, SECRET);
    assert.equal(eff.sources.access_key, 'env:APM_SIDECAR_ACCESS_KEY');
  });

  it('refuses a lower-case environment variable name, naming the right one', () => {
    assertConfigError(() => load({ env: { APM_SIDECAR_server_port: '1' } }), 'server_port', 'env:APM_SIDECAR_server_port', /use APM_SIDECAR_SERVER_PORT/);
  });
});

describe('config: config file syntax', () => {
  it('reads comments, blank lines, quotes, inline comments, CRLF and "=" inside values', () => {
    const path = file(
      [
        '\uFEFF# whatap.conf style',
        '',
        '   # indented comment',
        'server_host = "c1.example,c2.example"',
        "agent_id='pod # 1'",
        'data_dir = /var/lib/apm   # where retention lives',
        'socket_group=apm=users',
        'log_level = warn\r',
        'socket = ""',
      ].join('\n'),
    );
    const eff = load({ configFile: path });
    assert.deepEqual(eff.values.server_host, ['c1.example', 'c2.example']);
    assert.equal(eff.values.agent_id, 'pod # 1');
    assert.equal(eff.values.data_dir, '/var/lib/apm');
    assert.equal(eff.values.socket_group, 'apm=users');
    assert.equal(eff.values.log_level, 'warn');
    assert.equal(eff.values.socket, '');
    assert.equal(eff.sources.server_host, `file:${path}:4`);
    assert.equal(eff.sources.log_level, `file:${path}:8`);
  });

  it('rejects a line without "="', () => {
    const path = file('server_port 6600\n');
    assertConfigError(() => load({ configFile: path }), 'server_port 6600', `file:${path}:1`, /expected "key = value"/);
  });

  it('rejects an unterminated quote', () => {
    const path = file('agent_id = "pod-1\n');
    assertConfigError(() => load({ configFile: path }), 'agent_id', `file:${path}:1`, /unterminated " quote/);
  });

  it('rejects text after a closing quote', () => {
    const path = file('agent_id = "pod-1" extra\n');
    assertConfigError(() => load({ configFile: path }), 'agent_id', `file:${path}:1`, /after the closing quote/);
  });

  it('an unreadable config file is a ConfigError naming the file', () => {
    const missing = join(dir, 'missing.conf');
    const err = assertConfigError(() => load({ configFile: missing }), 'config', 'flag:--config');
    assert.ok(err.message.includes(missing), err.message);
    const directory = join(dir, 'a-directory.conf');
    mkdirSync(directory);
    const err2 = assertConfigError(() => load({ configFile: directory }), 'config', 'flag:--config');
    assert.ok(err2.message.includes(directory), err2.message);
  });

  it('the output of formatConfig reads back as a config file with the same values', () => {
    const eff = load({
      sets: ['server_host=a.example,b.example', 'http=[::1]:9090', 'agent_id=pod 1', 'reconnect_schedule=2x10-20,stop', 'socket=/tmp/x.sock'],
    });
    const text = formatConfig(eff)
      .split('\n')
      .filter((line) => !line.startsWith('access_key '))
      .join('\n');
    const again = load({ configFile: file(text) });
    assert.deepEqual(again.values, eff.values);
    assert.deepEqual(
      parseConfigFile(text, 'x').map((e) => e.key),
      CONFIG_KEY_NAMES.filter((k) => k !== 'access_key'),
    );
  });
});

describe('config: the access key', () => {
  it('refuses access_key via --set', () => {
    const err = assertConfigError(() => load({ sets: [`access_key=${SECRET}`] }), 'access_key', 'flag:--set');
    assert.match(err.message, /use APM_SIDECAR_ACCESS_KEY or --access-key-file/);
    assert.ok(!err.message.includes(SECRET));
  });

  it('refuses access_key as a named flag', () => {
    const err = assertConfigError(() => load({ flags: { access_key: SECRET } }), 'access_key', 'flag:--access-key', /APM_SIDECAR_ACCESS_KEY/);
    assert.ok(!err.message.includes(SECRET));
  });

  it('reads access_key_file (trimmed), reports it as the source and masks it everywhere', () => {
    const keyPath = file(`\n  ${SECRET}  \n`, 0o600);
    const eff = load({ flags: { access_key_file: keyPath } });
    assert.equal(eff.values.access_key, SECRET);
    assert.equal(eff.sources.access_key, `file:${keyPath}`);
    assert.equal(eff.sources.access_key_file, 'flag:--access-key-file');
    assert.deepEqual(eff.warnings, []);

    const text = formatConfig(eff);
    assert.ok(!text.includes(SECRET), 'formatConfig must not print the secret');
    assert.match(text, new RegExp(`^access_key = \\*{8} \\(${SECRET.length} chars\\) +# file:${keyPath.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}$`, 'm'));

    const json = JSON.stringify(configToJson(eff));
    assert.ok(!json.includes(SECRET), 'configToJson must not contain the secret');
    assert.ok(!json.includes(SECRET.slice(0, 12)), 'not even a prefix of it');
    assert.equal(configToJson(eff).values.access_key, `******** (${SECRET.length} chars)`);
  });

  it('masks an access key from the environment too, and shows (unset) when there is none', () => {
    const eff = load({ env: { APM_SIDECAR_ACCESS_KEY: SECRET } });
    assert.ok(!formatConfig(eff).includes(SECRET));
    assert.ok(!JSON.stringify(configToJson(eff)).includes(SECRET));
    const none = load();
    assert.match(formatConfig(none), /^access_key = \(unset\) +# default$/m);
    assert.equal(configToJson(none).values.access_key, '(unset)');
  });

  it('warns, without failing, when the access key file is group or world readable', () => {
    const keyPath = file(SECRET, 0o644);
    const eff = load({ env: { APM_SIDECAR_ACCESS_KEY_FILE: keyPath } });
    assert.equal(eff.values.access_key, SECRET);
    assert.equal(eff.warnings.length, 1);
    assert.ok(eff.warnings[0]?.includes(keyPath));
    assert.match(eff.warnings[0] ?? '', /readable by group or others/);
    assert.ok(!eff.warnings.join('\n').includes(SECRET));
  });

  it('a missing access key file is a ConfigError naming the file', () => {
    const missing = join(dir, 'no-such-key');
    const err = assertConfigError(() => load({ flags: { access_key_file: missing } }), 'access_key_file', 'flag:--access-key-file');
    assert.ok(err.message.includes(missing));
  });

  it('an empty access key file is a ConfigError', () => {
    const keyPath = file(' \n', 0o600);
    assertConfigError(() => load({ flags: { access_key_file: keyPath } }), 'access_key_file', 'flag:--access-key-file', /is empty/);
  });

  it('refuses access_key and access_key_file together rather than guess', () => {
    const keyPath = file(SECRET, 0o600);
    const err = assertConfigError(
      () => load({ flags: { access_key_file: keyPath }, env: { APM_SIDECAR_ACCESS_KEY: 'other-key' } }),
      'access_key',
      'env:APM_SIDECAR_ACCESS_KEY',
      /give only one/,
    );
    assert.ok(!err.message.includes(SECRET) && !err.message.includes('other-key'));
  });

  it('accepts access_key in a config file and warns when that file is readable by others', () => {
    const path = file(`access_key = ${SECRET}\n`, 0o640);
    const eff = load({ configFile: path });
    assert.equal(eff.values.access_key, SECRET);
    assert.equal(eff.sources.access_key, `file:${path}:1`);
    assert.equal(eff.warnings.length, 1);
    assert.ok(!formatConfig(eff).includes(SECRET));
  });

  it('never echoes a bad secret value in the error message', () => {
    const bad = `${SECRET}\u0001tail`;
    const err = assertConfigError(() => load({ env: { APM_SIDECAR_ACCESS_KEY: bad } }), 'access_key', 'env:APM_SIDECAR_ACCESS_KEY', /control character/);
    assert.ok(!err.message.includes(SECRET));
  });
});

describe('config: printing', () => {
  it('formatConfig prints one aligned line per key with its source', () => {
    const eff = load({ flags: { server_port: '7000' } });
    const lines = formatConfig(eff).trimEnd().split('\n');
    assert.equal(lines.length, CONFIG_KEY_NAMES.length);
    assert.match(lines.find((l) => l.startsWith('server_port ')) ?? '', /^server_port = 7000 +# flag:--server-port$/);
    assert.match(lines.find((l) => l.startsWith('http ')) ?? '', /^http = "" +# default$/);
    assert.match(lines.find((l) => l.startsWith('reconnect_schedule ')) ?? '', /^reconnect_schedule = 7x60000,300000 +# profile:appdynamics$/);
    const columns = new Set(lines.map((l) => l.indexOf('    # ')));
    assert.equal(columns.size, 1, 'the source column is aligned');
  });

  it('configToJson gives typed values and sources for every key', () => {
    const eff = load({ sets: ['http=127.0.0.1:9464'] });
    const json = configToJson(eff);
    assert.deepEqual(Object.keys(json.values), [...CONFIG_KEY_NAMES]);
    assert.equal(json.values.server_port, 6600);
    assert.deepEqual(json.values.server_host, ['127.0.0.1']);
    assert.deepEqual(json.values.http, { host: '127.0.0.1', port: 9464 });
    assert.equal(json.sources.http, 'flag:--set');
    assert.deepEqual(JSON.parse(JSON.stringify(json)), json, 'survives JSON');
  });
});
