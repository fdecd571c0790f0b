import { spawn } from 'node:child_process';
import { request } from 'node:http';
import { type Server, type Socket, createServer, connect as tcpConnect } from 'node:net';
import { join } from 'node:path';
import { Proc, ROOT, waitFor } from './procs';

export const COLLECTOR_CLI = join(ROOT, 'collector', 'dist', 'cli.js');

export interface CollectorProc extends Proc {
  port: number;
  httpPort: number;
  httpHost: string;
  dataDir: string;
}

/** Start `apm-collector run` on free ports; resolves once it logged where it listens. */
export async function startCollector(dataDir: string, extra: string[] = []): Promise<CollectorProc> {
  const args = [COLLECTOR_CLI, 'run', '--port', '0', '--host', '127.0.0.1', '--http', '127.0.0.1:0', '--data-dir', dataDir, ...extra];
  const p = new Proc(spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] })) as CollectorProc;
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

/** `apm-collector keys create`: the key is alone on the last line of stdout. */
export function createKey(dataDir: string, project = 'test'): Promise<string> {
  return lastLineOf(['keys', 'create', '--project', project, '--data-dir', dataDir]);
}

/** `apm-collector tokens create`: a read token for every project, or for one (by id or name). */
export function createToken(dataDir: string, project?: string): Promise<string> {
  return lastLineOf(['tokens', 'create', ...(project !== undefined ? ['--project', project] : []), '--data-dir', dataDir]);
}

function lastLineOf(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [COLLECTOR_CLI, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d;
    });
    child.stderr.on('data', (d: Buffer) => {
      err += d;
    });
    child.on('exit', (code) => {
      if (code !== 0) return reject(new Error(`${args.slice(0, 2).join(' ')} exited ${code}: ${err}`));
      const lines = out.trim().split('\n');
      resolve((lines[lines.length - 1] as string).trim());
    });
  });
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
