#!/usr/bin/env node
import { Command, CommanderError, Option } from 'commander';
import { EXIT_USAGE, collect, failStore, parseCount, parseHostPort, parsePort, parseStore } from './cli/common';
import { keysCreate, keysList, keysRevoke } from './cli/keys';
import { migrate } from './cli/migrate';
import { type RunOpts, run } from './cli/run';
import { tokensCreate, tokensList, tokensRevoke } from './cli/tokens';
import { LOG_LEVELS } from './logger';
import { SETTINGS } from './settings';
import { STORE_HELP } from './store/open-store';

export { defaultDataDir, parseHostPort } from './cli/common';

export function main(argv: string[]): void {
  const program = new Command('apm-collector');
  program
    .description('apm-sidecar reference collector: authenticates agents, stores their data in SQLite or PostgreSQL, serves a JSON API and a web page')
    .version('0.1.0');
  program.exitOverride();
  program.configureOutput({ writeErr: (s) => process.stderr.write(s) });
  const dataDirHelp = 'directory of the SQLite database (default: $APM_COLLECTOR_DATA_DIR, else ./.data/collector)';
  const storeOption = () => new Option('--store <url>', STORE_HELP).argParser(parseStore);

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
    .addOption(storeOption())
    .addOption(
      new Option(
        '--licenses <n>',
        "the size of the store's license pool, shared by every collector on the store (0 = unlimited; default: as the store has it, else 0)",
      ).argParser(parseCount),
    )
    .addOption(
      new Option('--set <key=value>', `set a collector duration or limit (repeatable): ${Object.keys(SETTINGS).join(', ')}`).default([]).argParser(collect),
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
    .addOption(storeOption())
    .action((o: { project: string; dataDir?: string; store?: string }) => keysCreate(o));
  keys
    .command('list')
    .description('list access keys (project id, name, creation time, fingerprint, status — never the secret)')
    .option('--data-dir <dir>', dataDirHelp)
    .addOption(storeOption())
    .option('--json', 'print JSON')
    .action((o: { dataDir?: string; store?: string; json?: boolean }) => keysList(o));
  keys
    .command('revoke')
    .description('revoke an access key: its handshakes are refused and running collectors end its sessions within a second')
    .requiredOption('--fingerprint <f>', 'the key fingerprint shown by keys list')
    .option('--data-dir <dir>', dataDirHelp)
    .addOption(storeOption())
    .action((o: { fingerprint: string; dataDir?: string; store?: string }) => keysRevoke(o));

  const tokens = program.command('tokens').description('manage the read tokens of the HTTP API and web page');
  tokens
    .command('create')
    .description('create a read token (for every project, or one); prints the token alone on the last line')
    .option('--project <name>', 'only this project (its id, or its name when unique)')
    .option('--data-dir <dir>', dataDirHelp)
    .addOption(storeOption())
    .action((o: { project?: string; dataDir?: string; store?: string }) => tokensCreate(o));
  tokens
    .command('list')
    .description('list read tokens (id, project, creation and revocation time — never the token)')
    .option('--data-dir <dir>', dataDirHelp)
    .addOption(storeOption())
    .option('--json', 'print JSON')
    .action((o: { dataDir?: string; store?: string; json?: boolean }) => tokensList(o));
  tokens
    .command('revoke')
    .description('revoke a read token by its id; a running collector refuses it from the next request on')
    .argument('<token-id>', 'the id shown by tokens create / tokens list')
    .option('--data-dir <dir>', dataDirHelp)
    .addOption(storeOption())
    .action((id: string, o: { dataDir?: string; store?: string }) => tokensRevoke(id, o));

  program
    .command('migrate')
    .description("bring the store's schema to this version (PostgreSQL: required before the first run and after an upgrade; SQLite migrates as it opens)")
    .option('--data-dir <dir>', dataDirHelp)
    .addOption(storeOption())
    .option(
      '--from-data-dir <dir>',
      'also copy the projects, access keys and read tokens of the SQLite collector in <dir> into the store (sidecars keep their keys)',
    )
    .action((o: { dataDir?: string; store?: string; fromDataDir?: string }) => migrate(o));

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
