import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, it } from 'node:test';
import { parseAllDocuments } from 'yaml';
import { SETTINGS } from '@apm-sidecar/collector';
import { ROOT } from '../helpers/procs';

/**
 * The operating files (deploy/) and the README's "Scaling out" section name commands, flags,
 * settings and environment variables of the collector; these checks keep them from drifting
 * from the code: every YAML file parses, every `apm-collector` command line uses a command and
 * flags its --help lists, every `--set` key is a setting, every APM_COLLECTOR_* variable is read
 * by the collector's source, every PG* variable by it or by the PostgreSQL client.
 */

const CLI = join(ROOT, 'collector', 'dist', 'cli.js');
/** The collector's commands (DESIGN §7, §11); a first word outside these is prose ("apm-collector on …"). */
const COMMANDS = new Set(['run', 'migrate', 'keys', 'tokens']);
const SUBCOMMANDS = new Set(['create', 'list', 'revoke']);

function files(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...files(p));
    else out.push(p);
  }
  return out;
}

const DEPLOY = files(join(ROOT, 'deploy'));

function readmeSection(title: string): string {
  const text = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const start = text.indexOf(`\n## ${title}\n`);
  assert.ok(start >= 0, `README has no "## ${title}" section`);
  const end = text.indexOf('\n## ', start + 1);
  return text.slice(start, end < 0 ? undefined : end);
}

/** Logical lines: comment marks and leading blanks dropped, `\` continuations joined. */
function logicalLines(text: string): string[] {
  const out: string[] = [];
  let acc = '';
  for (const raw of text.split('\n')) {
    const line = raw.replace(/^\s*#\s?/, '').trimEnd();
    if (line.endsWith('\\')) {
      acc += `${line.slice(0, -1)} `;
      continue;
    }
    out.push(acc + line);
    acc = '';
  }
  return out;
}

interface CommandUse {
  where: string;
  /** e.g. ['keys', 'create'] */
  command: string[];
  flags: string[];
  setKeys: string[];
}

/** `apm-collector <command> [sub] --flag … --set key=value …` as written in text. */
function commandUses(text: string, where: string): CommandUse[] {
  const uses: CommandUse[] = [];
  for (const line of logicalLines(text)) {
    for (const m of line.matchAll(/(?:^|[\s/"'(`$])apm-collector\s+([^\n]*)/g)) {
      // The command line ends at a shell separator, a quote or a comment.
      const words =
        (m[1] as string)
          .split(/\s*(?:\||&&|;|>|\)|'|"|`|#)/)[0]
          ?.split(/\s+/)
          .filter((w) => w.length > 0) ?? [];
      const first = words[0];
      if (first === undefined || !COMMANDS.has(first)) continue;
      const command = [first];
      if (words[1] !== undefined && SUBCOMMANDS.has(words[1])) command.push(words[1]);
      uses.push({ where, command, ...flagsOf(words.slice(command.length)) });
    }
  }
  return uses;
}

function flagsOf(argv: string[]): { flags: string[]; setKeys: string[] } {
  const flags: string[] = [];
  const setKeys: string[] = [];
  argv.forEach((w, i) => {
    if (!w.startsWith('--')) return;
    const flag = w.split('=')[0] as string;
    flags.push(flag);
    const value = w.includes('=') ? w.slice(flag.length + 1) : argv[i + 1];
    if (flag === '--set' && value !== undefined) setKeys.push(value.split('=')[0] as string);
  });
  return { flags, setKeys };
}

interface Container {
  name: string;
  image?: string;
  command?: string[];
  args?: string[];
  env?: { name: string; valueFrom?: { secretKeyRef?: { key: string } } }[];
}

/** Every container and init container of every pod template (or pod) in the parsed documents. */
function containers(doc: unknown): Container[] {
  const out: Container[] = [];
  const visit = (v: unknown): void => {
    if (Array.isArray(v)) v.forEach(visit);
    else if (v !== null && typeof v === 'object') {
      for (const [k, x] of Object.entries(v)) {
        if ((k === 'containers' || k === 'initContainers') && Array.isArray(x)) out.push(...(x as Container[]));
        else visit(x);
      }
    }
  };
  visit(doc);
  return out;
}

const helpCache = new Map<string, string[] | null>();
/** The flags `apm-collector <command> --help` lists, or null when there is no such command. */
function cliFlags(command: string[]): string[] | null {
  const k = command.join(' ');
  const cached = helpCache.get(k);
  if (cached !== undefined) return cached;
  const r = spawnSync(process.execPath, [CLI, ...command, '--help'], { encoding: 'utf8', timeout: 30_000 });
  const out = `${r.stdout}${r.stderr}`;
  const flags = out.includes(`Usage: apm-collector ${k} `) ? [...out.matchAll(/^\s+(?:-\w, )?(--[a-z0-9-]+)/gm)].map((x) => x[1] as string) : null;
  helpCache.set(k, flags);
  return flags;
}

function sourceText(dir: string): string {
  return files(dir)
    .filter((f) => f.endsWith('.ts') || f.endsWith('.js'))
    .map((f) => readFileSync(f, 'utf8'))
    .join('\n');
}

/** What the YAML files under deploy/ say: collector command lines of containers, environment names. */
function yamlFacts(): { files: string[]; uses: CommandUse[]; envNames: Map<string, string> } {
  const yamlFiles = DEPLOY.filter((f) => /\.ya?ml$/.test(f));
  const uses: CommandUse[] = [];
  const envNames = new Map<string, string>();
  for (const f of yamlFiles) {
    const docs = parseAllDocuments(readFileSync(f, 'utf8'));
    // Messages only: the error objects hold the whole parse tree (slow to print in a diff).
    assert.deepEqual(
      docs.flatMap((d) => d.errors.map((e) => e.message)),
      [],
      relative(ROOT, f),
    );
    for (const d of docs) {
      for (const c of containers(d.toJS() as unknown)) {
        for (const e of c.env ?? []) {
          envNames.set(e.name, relative(ROOT, f));
          const key = e.valueFrom?.secretKeyRef?.key;
          // Secret keys are environment names too (the one-off pods take them with envFrom).
          if (key !== undefined && /^[A-Z_]+$/.test(key)) envNames.set(key, relative(ROOT, f));
        }
        if (c.image?.startsWith('apm-collector') && c.command === undefined && c.args !== undefined) {
          const argv = c.args.map(String);
          const command = [argv[0] as string, ...(SUBCOMMANDS.has(argv[1] as string) ? [argv[1] as string] : [])];
          uses.push({ where: `${relative(ROOT, f)} container ${c.name}`, command, ...flagsOf(argv.slice(command.length)) });
        }
      }
    }
  }
  return { files: yamlFiles, uses, envNames };
}

describe('operating files and docs name what the code has', () => {
  it('every YAML file under deploy/ parses, and the scale-out manifest has 3 collector replicas, a Service on 6600 and 6680, and the store from a Secret', () => {
    const { files: yamlFiles } = yamlFacts();
    assert.ok(yamlFiles.length >= 3, `YAML files: ${yamlFiles.join(', ')}`);
    const scale = parseAllDocuments(readFileSync(join(ROOT, 'deploy', 'kubernetes', 'collectors-postgres.yaml'), 'utf8')).map((d) => d.toJS()) as {
      kind: string;
      spec: Record<string, unknown>;
    }[];
    const deployment = scale.find((d) => d.kind === 'Deployment');
    assert.equal(deployment?.spec.replicas, 3);
    const service = scale.find((d) => d.kind === 'Service');
    assert.deepEqual(
      (service?.spec.ports as { port: number }[]).map((p) => p.port),
      [6600, 6680],
    );
    const pod = containers(deployment);
    const main = pod.find((c) => c.name === 'apm-collector');
    for (const name of ['APM_COLLECTOR_STORE', 'PGPASSWORD'])
      assert.ok(
        main?.env?.some((e) => e.name === name && e.valueFrom?.secretKeyRef !== undefined),
        `${name} from a Secret`,
      );
    assert.ok(
      pod.some((c) => c.args?.[0] === 'migrate'),
      'a container runs apm-collector migrate',
    );
  });

  it('every apm-collector command line uses a command and flags that the CLI has, and --set keys that are settings', () => {
    const { uses } = yamlFacts();
    for (const f of DEPLOY) uses.push(...commandUses(readFileSync(f, 'utf8'), relative(ROOT, f)));
    uses.push(...commandUses(readmeSection('Scaling out'), 'README.md (Scaling out)'));
    assert.ok(uses.some((u) => u.command[0] === 'migrate'));
    const problems: string[] = [];
    for (const u of uses) {
      const known = cliFlags(u.command);
      if (known === null) {
        problems.push(`${u.where}: no command "apm-collector ${u.command.join(' ')}"`);
        continue;
      }
      for (const f of u.flags) if (!known.includes(f)) problems.push(`${u.where}: "apm-collector ${u.command.join(' ')}" has no ${f}`);
      for (const k of u.setKeys) if (!Object.hasOwn(SETTINGS, k)) problems.push(`${u.where}: --set ${k} is not a collector setting`);
    }
    assert.deepEqual(problems, []);
  });

  it('every environment variable named is read by the collector (APM_COLLECTOR_*) or by it or the PostgreSQL client (PG*)', () => {
    const { envNames } = yamlFacts();
    const texts = [
      ...DEPLOY.map((f) => [relative(ROOT, f), readFileSync(f, 'utf8')] as const),
      ['README.md (Scaling out)', readmeSection('Scaling out')] as const,
    ];
    for (const [where, text] of texts) for (const m of text.matchAll(/\b(APM_COLLECTOR_[A-Z_]+|PG[A-Z]+)\b/g)) envNames.set(m[1] as string, where);
    assert.ok(envNames.has('APM_COLLECTOR_STORE'));
    const collector = sourceText(join(ROOT, 'collector', 'src'));
    const pgLib = join(ROOT, 'node_modules', 'pg', 'lib');
    const pg = existsSync(pgLib) ? sourceText(pgLib) : '';
    const problems: string[] = [];
    for (const [name, where] of envNames) {
      if (!name.startsWith('APM_COLLECTOR_') && !name.startsWith('PG')) continue;
      const readBy = name.startsWith('PG') ? `${collector}\n${pg}` : collector;
      if (!readBy.includes(name)) problems.push(`${where}: ${name} is read nowhere`);
    }
    assert.deepEqual(problems, []);
  });

  it('the README lists every collector setting', () => {
    const section = readmeSection('The collector');
    const missing = Object.keys(SETTINGS).filter((k) => !section.includes(`\`${k}\``));
    assert.deepEqual(missing, []);
  });
});
