// The fault proxy by hand (test/RELIABILITY.md, "Network faults"):
//   node test/dist/faults/fault-proxy-cli.js --listen 127.0.0.1:7000 --target 127.0.0.1:6600 \
//     [--toxic latency=80,jitter=40] [--toxic half-open=up] [--seed N]
// --listen / --target take HOST:PORT or a Unix socket path (shim → sidecar). While it runs, lines on
// stdin change the toxics:
//   set TOXIC            e.g. `set stall,dir=up`, `set frame-drop=5`, `set bandwidth=20000,dir=down`
//   clear [NAME]         remove one toxic (both ways), or all
//   reset                reset every open connection now
//   stats                print the counters
// Every answer is one JSON line on stdout.
import { createInterface } from 'node:readline';
import { type Endpoint, FaultProxy } from '../helpers/fault-proxy';
import { type Toxic, isToxicName, parseToxic } from '../helpers/toxics';

function endpoint(flag: string, v: string | undefined): Endpoint {
  if (v === undefined || v === '') throw new Error(`${flag} needs HOST:PORT or a socket path`);
  if (v.includes('/')) return { path: v };
  const i = v.lastIndexOf(':');
  const port = Number(v.slice(i + 1));
  if (i < 0 || !Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`${flag}: ${JSON.stringify(v)} is not HOST:PORT`);
  return { host: v.slice(0, i), port };
}

/** Park-Miller: enough to replay a jitter sequence from --seed. */
function seeded(seed: number): () => number {
  let s = seed % 2147483647 || 1;
  return () => {
    s = (s * 48271) % 2147483647;
    return (s - 1) / 2147483646;
  };
}

function parseArgs(argv: string[]): { listen: Endpoint; target: Endpoint; toxics: Toxic[]; seed: number | null } {
  let listen: Endpoint | null = null;
  let target: Endpoint | null = null;
  let seed: number | null = null;
  const toxics: Toxic[] = [];
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i] as string;
    const v = argv[++i];
    if (flag === '--listen') listen = endpoint(flag, v);
    else if (flag === '--target') target = endpoint(flag, v);
    else if (flag === '--toxic') toxics.push(parseToxic(v ?? ''));
    else if (flag === '--seed') seed = Number(v);
    else throw new Error(`unknown flag ${flag}`);
  }
  if (listen === null || target === null) throw new Error('--listen and --target are required');
  return { listen, target, toxics, seed };
}

const say = (o: Record<string, unknown>): void => {
  process.stdout.write(`${JSON.stringify(o)}\n`);
};

async function main(): Promise<void> {
  let args: ReturnType<typeof parseArgs>;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`fault-proxy: ${(err as Error).message}\n`);
    process.exit(2);
  }
  const proxy = new FaultProxy({ listen: args.listen, target: args.target, ...(args.seed !== null && { random: seeded(args.seed) }) });
  for (const t of args.toxics) proxy.apply(t);
  const address = await proxy.start();
  say({ msg: 'listening', address, target: args.target, toxics: proxy.describe() });
  const rl = createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    const [cmd, arg] = line.trim().split(/\s+/, 2);
    try {
      if (cmd === 'set') proxy.apply(parseToxic(arg ?? ''));
      else if (cmd === 'clear') {
        if (arg !== undefined && !isToxicName(arg)) throw new Error(`unknown toxic ${arg}`);
        proxy.clear(arg);
      } else if (cmd === 'reset') proxy.resetAll();
      else if (cmd === 'stats') say({ stats: proxy.stats });
      else if (cmd !== undefined && cmd !== '') throw new Error(`unknown command ${cmd}: set, clear, reset, stats`);
      say({ toxics: proxy.describe() });
    } catch (err) {
      say({ error: (err as Error).message });
    }
  });
  const stop = (): void => {
    void proxy.close().then(() => process.exit(0));
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

void main();
