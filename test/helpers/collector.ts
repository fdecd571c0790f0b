import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { request } from 'node:http';
import { type Server, type Socket, createServer, connect as tcpConnect } from 'node:net';
import { join } from 'node:path';
import { after, before } from 'node:test';
import { type CliResult, Proc, ROOT, type SidecarProc, runToEnd, startSidecar, tempDir, waitFor } from './procs';

export const COLLECTOR_CLI = join(ROOT, 'collector', 'dist', 'cli.js');

export interface CollectorProc extends Proc {
  port: number;
  httpPort: number;
  httpHost: string;
  dataDir: string;
}

/** The arguments of `apm-collector run` on free loopback ports over `dataDir`. */
export function collectorArgs(dataDir: string, extra: string[] = []): string[] {
  return [COLLECTOR_CLI, 'run', '--port', '0', '--host', '127.0.0.1', '--http', '127.0.0.1:0', '--data-dir', dataDir, ...extra];
}

/** Resolves once a starting collector logged where it listens (its ports then set on `p`); rejects if it exits first. */
export async function collectorListening(p: CollectorProc, dataDir: string): Promise<CollectorProc> {
  const line = await waitFor(
    'the collector to listen',
    () => {
      if (!p.alive) throw new Error(`collector exited ${p.exitCode}: ${p.stderr}`);
      return p.lines.find((l) => l.msg === 'listening');
    },
    15000,
  );
  p.port = (line.agents as { port: number }).port;
  p.httpPort = (line.http as { port: number }).port;
  p.httpHost = (line.http as { host: string }).host;
  p.dataDir = dataDir;
  return p;
}

/** Start `apm-collector run` on free ports; resolves once it logged where it listens. */
export function startCollector(dataDir: string, extra: string[] = []): Promise<CollectorProc> {
  const p = new Proc(spawn(process.execPath, collectorArgs(dataDir, extra), { stdio: ['ignore', 'pipe', 'pipe'] })) as CollectorProc;
  return collectorListening(p, dataDir);
}

/** Sidecar settings for tests against a collector: fast flushes and intervals, and a reconnect after 200 ms instead of the default schedule. */
export const FAST_SIDECAR = [
  '--set',
  'flush_ms=50',
  '--set',
  'metric_interval_ms=200',
  '--set',
  'tcp_connection_timeout=1000',
  '--set',
  'reconnect_schedule=200',
];

/** `apm-sidecar run` over TCP to this collector with `key` (from the environment), as agent `agentId`, with FAST_SIDECAR. */
export function tcpSidecar(dir: string, c: CollectorProc, key: string, agentId: string): Promise<SidecarProc> {
  return startSidecar(
    dir,
    ['--transport', 'tcp', '--server-host', '127.0.0.1', '--server-port', String(c.port), '--set', `agent_id=${agentId}`, ...FAST_SIDECAR],
    {
      APM_SIDECAR_ACCESS_KEY: key,
    },
  );
}

/** The sum of every stored point of the counter `name`, read through the JSON API. */
export async function counterSum(c: CollectorProc, name: string): Promise<number> {
  const r = await getJson<{ sum: number }[]>(c.httpPort, `/api/metrics?name=${encodeURIComponent(name)}`, c.httpHost);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.reduce((a, p) => a + p.sum, 0);
}

/**
 * For a describe(): a collector in a temporary directory with one access key for `project`,
 * started before the suite's tests (`use` receives it and the key) and stopped after them, when the
 * directory goes too. Returns the directory, for the suite's sidecars.
 */
export function collectorPerSuite(project: string, extra: string[], use: (c: CollectorProc, key: string) => void): { dir: string } {
  const tmp = tempDir();
  let collector: CollectorProc | undefined;
  before(async () => {
    const data = join(tmp.dir, 'collector');
    const key = await createKey(data, project);
    collector = await startCollector(data, extra);
    use(collector, key);
  });
  after(async () => {
    await collector?.kill('SIGTERM');
    tmp.cleanup();
  });
  return { dir: tmp.dir };
}

/** `apm-collector keys create`: the key is alone on the last line of stdout. */
export function createKey(dataDir: string, project = 'test'): Promise<string> {
  return lastLineOf(['keys', 'create', '--project', project, '--data-dir', dataDir]);
}

/** `apm-collector tokens create`: a read token for every project, or for one (by id or name). */
export function createToken(dataDir: string, project?: string): Promise<string> {
  return lastLineOf(['tokens', 'create', ...(project !== undefined ? ['--project', project] : []), '--data-dir', dataDir]);
}

async function lastLineOf(args: string[]): Promise<string> {
  const r = await runCollector(args);
  if (r.code !== 0) throw new Error(`${args.slice(0, 2).join(' ')} exited ${r.code}: ${r.stderr}`);
  const lines = r.stdout.trim().split('\n');
  return (lines[lines.length - 1] as string).trim();
}

/**
 * Run an `apm-collector` command to completion. APM_COLLECTOR_DATA_DIR is never taken from the
 * test's own environment (a test sets it in `env` when it means to); `asUser` runs it as that user.
 */
export function runCollector(args: string[], o: { env?: Record<string, string | undefined>; asUser?: string } = {}): Promise<CliResult> {
  const env = { APM_COLLECTOR_DATA_DIR: undefined, ...o.env };
  if (o.asUser === undefined) return runToEnd(process.execPath, [COLLECTOR_CLI, ...args], env);
  return runToEnd('runuser', ['-u', o.asUser, '--', process.execPath, COLLECTOR_CLI, ...args], env);
}

export interface GetOptions {
  /** Sent as `Authorization: Bearer <token>`. */
  token?: string;
  /** The Host header (default: the address connected to). */
  hostHeader?: string;
  /** The address to connect to (default 127.0.0.1). */
  address?: string;
}

export function getJson<T = any>(
  port: number,
  path: string,
  o: GetOptions | string = {},
): Promise<{ status: number; body: T; headers: Record<string, unknown> }> {
  const opts: GetOptions = typeof o === 'string' ? { address: o } : o;
  const headers: Record<string, string> = {};
  if (opts.token !== undefined) headers.authorization = `Bearer ${opts.token}`;
  if (opts.hostHeader !== undefined) headers.host = opts.hostHeader;
  return new Promise((resolve, reject) => {
    const req = request({ host: opts.address ?? '127.0.0.1', port, path, headers }, (res) => {
      let body = '';
      res.on('data', (d) => {
        body += d;
      });
      res.on('end', () => {
        try {
          resolve({ status: res.statusCode ?? 0, body: JSON.parse(body) as T, headers: res.headers });
        } catch (err) {
          reject(new Error(`${path}: not JSON: ${body.slice(0, 200)} (${String(err)})`));
        }
      });
    });
    req.on('error', reject);
    req.end();
  });
}

/** A TCP relay that records every byte in both directions (to inspect what crosses the wire). */
export class Relay {
  readonly up: Buffer[] = [];
  readonly down: Buffer[] = [];
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  port = 0;

  constructor(private readonly targetPort: number) {
    this.server = createServer((client) => {
      const upstream = tcpConnect({ host: '127.0.0.1', port: this.targetPort });
      this.sockets.add(client);
      this.sockets.add(upstream);
      client.on('data', (d: Buffer) => {
        this.up.push(Buffer.from(d));
        upstream.write(d);
      });
      upstream.on('data', (d: Buffer) => {
        this.down.push(Buffer.from(d));
        client.write(d);
      });
      const end = () => {
        client.destroy();
        upstream.destroy();
      };
      client.on('close', end);
      upstream.on('close', end);
      client.on('error', end);
      upstream.on('error', end);
    });
  }

  listen(): Promise<number> {
    return new Promise((resolve) =>
      this.server.listen(0, '127.0.0.1', () => {
        this.port = (this.server.address() as { port: number }).port;
        resolve(this.port);
      }),
    );
  }

  bytes(): Buffer {
    return Buffer.concat([...this.up, ...this.down]);
  }

  close(): void {
    for (const s of this.sockets) s.destroy();
    this.server.close();
  }
}
