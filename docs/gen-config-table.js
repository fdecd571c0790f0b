'use strict';
/**
 * Prints the sidecar's configuration keys from the built sidecar/dist/config.js,
 * so the documentation is generated from the same table the sidecar validates with.
 *
 *   node docs/gen-config-table.js          Markdown table (pasted into README.md)
 *   node docs/gen-config-table.js --conf   commented `key = value` lines (deploy/sidecar.conf.example)
 *
 * Run `npx tsc -b` first.
 */
const { join } = require('node:path');

let config;
try {
  config = require(join(__dirname, '..', 'sidecar', 'dist', 'config.js'));
} catch (err) {
  process.stderr.write(`gen-config-table: cannot load sidecar/dist/config.js (${err.message}); run npx tsc -b first\n`);
  process.exit(1);
}
const { CONFIG_KEYS, envName } = config;
const { PROFILES } = require(join(__dirname, '..', 'sidecar', 'dist', 'reconnect-schedule.js'));
const profileDefault = CONFIG_KEYS.find((d) => d.name === 'profile').default;
const profileText = `(${Object.entries(PROFILES)
  .map(([name, p]) => `${name}: ${p.reconnect_schedule}`)
  .join(', ')})`;

const mode = process.argv[2];
if (mode !== undefined && mode !== '--conf') {
  process.stderr.write('usage: node docs/gen-config-table.js [--conf]\n');
  process.exit(2);
}

/** Text safe inside a Markdown table cell. */
const cell = (s) => String(s).replace(/\|/g, '\\|').replace(/\n/g, ' ');
const code = (s) => (s === '' ? '' : `\`${cell(s)}\``);

function markdown() {
  const rows = ['| Key | Default | Type | Description |', '|---|---|---|---|'];
  for (const def of CONFIG_KEYS) {
    const dflt = def.default === '' ? '*(empty)*' : def.default.startsWith('(') ? cell(def.default) : code(def.default);
    const secret = def.secret ? ' **Secret:** masked by `apm-sidecar config` and in error messages.' : '';
    rows.push(`| \`${def.name}\` | ${dflt} | ${cell(def.type)} | ${cell(def.description)}.${secret} |`);
  }
  return `${rows.join('\n')}\n`;
}

function conf() {
  const out = [];
  for (const def of CONFIG_KEYS) {
    const fromProfile = def.default.startsWith('(');
    out.push(`# ${def.description} [${def.type}; env ${envName(def.name)}${fromProfile ? `; default ${def.default.slice(1, -1)} ${profileText}` : ''}]`);
    // Uncommenting any of these lines gives a valid setting.
    out.push(`# ${def.name} = ${fromProfile ? PROFILES[profileDefault].reconnect_schedule : def.default}`.trimEnd());
    out.push('');
  }
  return out.join('\n');
}

process.stdout.write(mode === '--conf' ? conf() : markdown());
