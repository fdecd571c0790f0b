import { readFileSync } from 'node:fs';
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { ApmError } from '@apm-sidecar/proto';
import type { Logger } from 'pino';
import { type Access, type RouteClass, decideAccess } from './api-access';
import { type Clock, systemClock } from './clock';
import { type HttpLimits, serverLimits } from '@apm-sidecar/proto';
import { clientErrorOf, trackExchange } from './http-limits';
import { createMetricsRegistry, prometheusText } from './prometheus';
import type { ActiveToken } from './store/read-tokens';
import type { CollectorStore } from './store/contract';
import { HttpError, NoPageError, listQueryFrom, metricQueryFrom, scoped, traceQueryFrom } from './api-query';
import type { AgentState, CollectorStats } from './types';

/**
 * The collector's HTTP side (node:http, no framework):
 *
 *   GET /api/agents    ?project=   agents; disconnected ones stay listed for disconnected_retention_ms
 *   GET /api/metrics   ?project=&agent=&name=&from=&to=&limit=   (from/to epoch ms; from inclusive, to exclusive)
 *   GET /api/traces    ?project=&agent=&traceId=&name=&limit=   recent traces, newest first
 *   GET /api/events    ?project=&agent=&limit=   recent events, newest first
 *   GET /api/snapshots ?project=&agent=&limit=   recent snapshots, newest first
 *   GET /api/registrations ?project=&agent=&limit=   business-transaction registrations, by agent and name
 *
 * An agent is (project, agent id): every row carries `project`, and `agent=` alone
 * matches that agent id in every project.
 *   GET /api/stats     CollectorStats (DESIGN §7) plus agents by state
 *   GET /healthz       200 "ok"
 *   GET /metrics       Prometheus text format (prometheus.ts)
 *   GET /              the web page (public/index.html, with its modules /app.js … and /style.css)
 *
 * `extraRoutes` sees every request first (the agents' HTTP tunnel plugs in there).
 * Then access is decided (api-access.ts): 401 ERR_UNAUTHORIZED without a valid read token,
 * 403 ERR_PROTECTED_MODE from a non-loopback client when no token is configured.
 * A project-scoped token sees only the rows of its project, in every route.
 * Every error is JSON `{ error: { code, message } }`: unknown path 404, wrong method
 * 405, a body over maxBodyBytes 413, bad query parameters 400.
 */

/** What the API reads from the store. */
export type ApiStore = Pick<
  CollectorStore,
  'listAgents' | 'queryMetrics' | 'agentsByState' | 'listTraces' | 'listEvents' | 'listSnapshots' | 'listBtRegistrations'
>;

export interface HttpApiOptions {
  store: ApiStore;
  stats: CollectorStats;
  log: Logger;
  /** Return true when the request was handled (responded to or being responded to). */
  extraRoutes?: (req: IncomingMessage, res: ServerResponse) => boolean;
  /** Hide agents disconnected longer than this (default 1800000). */
  disconnectedRetentionMs?: number;
  /** Largest request body accepted by the API routes (default 64 KiB). */
  maxBodyBytes?: number;
  /** Directory holding index.html (default: the package's public/). */
  publicDir?: string;
  /** Whose now decides how long an agent has been disconnected (default: the system clock); the agent server's. */
  clock?: Pick<Clock, 'now'>;
  /** Read tokens not revoked, asked on each request (default: none, i.e. protected mode). */
  tokens?: () => readonly ActiveToken[] | Promise<readonly ActiveToken[]>;
  /** /metrics open to every client (default: loopback only, or a token). */
  metricsOpen?: boolean;
  /** Header size and the slow-client deadlines (default: the settings' defaults). */
  limits?: HttpLimits;
}

const DEFAULT_LIMITS: HttpLimits = { headersTimeoutMs: 10_000, requestTimeoutMs: 60_000, keepAliveTimeoutMs: 5_000, maxHeaderBytes: 16_384 };

export const DEFAULT_PUBLIC_DIR = join(__dirname, '..', 'public');

/** The files of the web page: route → [file in publicDir, content type]. Nothing else is served from disk. */
const PAGE_MODULES = ['app', 'activity', 'agents', 'api', 'charts', 'dom', 'format', 'options', 'series-picker', 'table', 'traces', 'units'];
const PUBLIC_FILES: Record<string, [string, string]> = {
  '/': ['index.html', 'text/html; charset=utf-8'],
  '/index.html': ['index.html', 'text/html; charset=utf-8'],
  '/style.css': ['style.css', 'text/css; charset=utf-8'],
  ...Object.fromEntries(PAGE_MODULES.map((m) => [`/${m}.js`, [`${m}.js`, 'text/javascript; charset=utf-8']])),
};

/** The page loads only its own files and calls only its own API. */
const PAGE_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/** project: the caller's project, or null for a collector-wide caller. */
type Handler = (q: URLSearchParams, res: ServerResponse, project: string | null) => void | Promise<void>;

const OPEN = { ok: true, project: null } as const;

function routeClass(path: string): RouteClass {
  if (path === '/healthz') return 'open';
  if (path === '/metrics') return 'metrics';
  return path === '/api' || path.startsWith('/api/') ? 'api' : 'page';
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const s = `${JSON.stringify(body)}\n`;
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': String(Buffer.byteLength(s)),
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
    ...headers,
  });
  res.end(s);
}

function sendError(res: ServerResponse, status: number, code: string, message: string, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  sendJson(res, status, { error: { code, message } }, headers);
}

export function createHttpApi(opts: HttpApiOptions): Server {
  const { store, stats, log } = opts;
  const clock = opts.clock ?? systemClock;
  const retention = opts.disconnectedRetentionMs ?? 1_800_000;
  const maxBody = opts.maxBodyBytes ?? 64 * 1024;
  const publicDir = opts.publicDir ?? DEFAULT_PUBLIC_DIR;
  const publicCache = new Map<string, Buffer>();
  const tokens = opts.tokens ?? (() => []);
  const metricsOpen = opts.metricsOpen ?? false;
  const deniedLogged = new Set<string>();
  // A scrape reads the agents' states from the store first; the registry's gauges are synchronous.
  let byState: Record<AgentState, number> = { live: 0, stalled: 0, disconnected: 0 };
  const registry = createMetricsRegistry({ stats, agentsByState: () => byState });

  const listAgents = async (project: string | undefined) => {
    const t = clock.now();
    const rows = await store.listAgents(project !== undefined ? { project } : {});
    return rows.filter((a) => !(a.state === 'disconnected' && t - a.stateSince > retention));
  };

  const routes = new Map<string, Handler>([
    [
      '/api/agents',
      async (q, res, project) => {
        const rows = (await listAgents(scoped(listQueryFrom(q), project).project)).map((a) => ({
          project: a.projectId,
          agentId: a.agentId,
          app: a.app,
          host: a.host,
          state: a.state,
          lastSeenAt: new Date(a.lastSeenAt).toISOString(),
          licensed: a.licensed,
          projectId: a.projectId,
          apps: a.apps,
          version: a.version,
        }));
        sendJson(res, 200, rows);
      },
    ],
    ['/api/metrics', async (q, res, project) => sendJson(res, 200, await store.queryMetrics(scoped(metricQueryFrom(q), project)))],
    ['/api/traces', async (q, res, project) => sendJson(res, 200, await store.listTraces(scoped(traceQueryFrom(q), project)))],
    ['/api/events', async (q, res, project) => sendJson(res, 200, await store.listEvents(scoped(listQueryFrom(q), project)))],
    ['/api/snapshots', async (q, res, project) => sendJson(res, 200, await store.listSnapshots(scoped(listQueryFrom(q), project)))],
    ['/api/registrations', async (q, res, project) => sendJson(res, 200, await store.listBtRegistrations(scoped(listQueryFrom(q), project)))],
    [
      '/api/stats',
      async (_q, res, project) => {
        if (project === null) {
          sendJson(res, 200, { ...(stats.toJSON() as Record<string, unknown>), agents: await store.agentsByState() });
          return;
        }
        // The counters are collector-wide (every project's traffic): a project's caller gets its agents only.
        const agents: Record<AgentState, number> = { live: 0, stalled: 0, disconnected: 0 };
        for (const a of await store.listAgents({ project })) agents[a.state]++;
        sendJson(res, 200, { project, agents });
      },
    ],
    [
      '/healthz',
      (_q, res) => {
        res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' });
        res.end('ok\n');
      },
    ],
    [
      '/metrics',
      (_q, res) => {
        store
          .agentsByState()
          .then((states) => {
            byState = states;
            return prometheusText(registry);
          })
          .then(
            (text) => {
              res.writeHead(200, { 'content-type': registry.contentType, 'cache-control': 'no-store' });
              res.end(text);
            },
            (err: unknown) => {
              log.error({ err }, 'metrics scrape failed');
              sendError(res, 500, 'ERR_INTERNAL', 'internal error');
            },
          );
      },
    ],
    // The web page: a fixed list of files, so no request path ever reaches the file system.
    ...Object.entries(PUBLIC_FILES).map(([route, [file, type]]): [string, Handler] => [
      route,
      (_q, res) => {
        let body = publicCache.get(file);
        if (body === undefined) {
          try {
            body = readFileSync(join(publicDir, file));
          } catch (err) {
            throw new NoPageError((err as Error).message);
          }
          publicCache.set(file, body);
        }
        res.writeHead(200, {
          'content-type': type,
          'content-length': String(body.length),
          'x-content-type-options': 'nosniff',
          'cache-control': 'no-cache',
          ...(type.startsWith('text/html') && { 'content-security-policy': PAGE_CSP }),
        });
        res.end(body);
      },
    ]),
  ]);

  const failed = (req: IncomingMessage, res: ServerResponse, err: unknown): void => {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    if (err instanceof HttpError) {
      sendError(res, err.status, err.code, err.message);
      return;
    }
    log.error({ err, url: req.url }, 'api request failed');
    const code = err instanceof ApmError ? err.code : 'ERR_INTERNAL';
    sendError(res, 500, code, err instanceof ApmError ? err.message : 'internal error');
  };
  const respond = (req: IncomingMessage, res: ServerResponse, handler: Handler, search: string, project: string | null): void => {
    try {
      const done = handler(new URLSearchParams(search), res, project);
      if (done !== undefined) done.catch((err: unknown) => failed(req, res, err));
    } catch (err) {
      failed(req, res, err);
    }
  };

  const limits = serverLimits(opts.limits ?? DEFAULT_LIMITS);
  // Sockets with an exchange under way (a request not read to its end, or its answer not finished):
  // a refusal there cannot be answered on the wire (it would follow or interleave another answer), only cut.
  const inFlight = new WeakSet<object>();
  const server = createServer(limits, (req, res) => {
    trackExchange(inFlight, req, res);
    if (opts.extraRoutes?.(req, res) === true) return;
    const url = req.url ?? '/';
    const qi = url.indexOf('?');
    const path = qi < 0 ? url : url.slice(0, qi);
    const search = qi < 0 ? '' : url.slice(qi + 1);
    const handler = routes.get(path);
    const route = routeClass(path);
    // /healthz is decided without reading the tokens (probes call it often).
    if (route === 'open') {
      serve(req, res, handler, path, search, OPEN);
      return;
    }
    Promise.resolve(tokens()).then(
      (active) =>
        serve(
          req,
          res,
          handler,
          path,
          search,
          decideAccess(
            { route, peer: req.socket.remoteAddress, host: req.headers.host, authorization: req.headers.authorization },
            { tokens: active, metricsOpen },
          ),
        ),
      (err: unknown) => failed(req, res, err),
    );
  });
  const serve = (req: IncomingMessage, res: ServerResponse, handler: Handler | undefined, path: string, search: string, access: Access): void => {
    if (!access.ok) {
      req.resume();
      stats.rejected[access.reason]++;
      // Logged once per reason (the token is never logged); later ones only counted.
      const first = !deniedLogged.has(access.reason);
      deniedLogged.add(access.reason);
      log[first ? 'warn' : 'debug'](
        { code: access.code, peer: req.socket.remoteAddress, host: req.headers.host?.slice(0, 200), path: path.slice(0, 200) },
        first ? 'HTTP request refused (later refusals are counted in rejected, not logged)' : 'HTTP request refused',
      );
      sendError(res, access.status, access.code, access.message, access.status === 401 ? { 'www-authenticate': 'Bearer realm="apm-collector"' } : {});
      return;
    }
    const project = access.project;
    // Check the declared size first; a chunked body is counted as it arrives.
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > maxBody) {
      sendError(res, 413, 'ERR_BODY_TOO_LARGE', `request body of ${declared} bytes is over the limit of ${maxBody}`, { connection: 'close' });
      return;
    }
    if (handler === undefined) {
      req.resume();
      sendError(res, 404, 'ERR_NOT_FOUND', `no route for ${path.slice(0, 200)}`);
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      req.resume();
      sendError(res, 405, 'ERR_METHOD_NOT_ALLOWED', `${req.method} is not allowed on ${path}; use GET`, { allow: 'GET, HEAD' });
      return;
    }
    let size = 0;
    let over = false;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBody && !over) {
        over = true;
        sendError(res, 413, 'ERR_BODY_TOO_LARGE', `request body is over the limit of ${maxBody} bytes`, { connection: 'close' });
      }
    });
    req.on('end', () => {
      if (!over) respond(req, res, handler, search, project);
    });
    req.on('error', () => res.destroy());
  };
  server.keepAliveTimeout = limits.keepAliveTimeout;
  // Malformed, oversized or too slow HTTP: counted in rejected, answered in JSON as well when the socket still takes it.
  // node:http may report one connection more than once (the rest of an oversized header still arriving): counted once.
  const refused = new WeakSet<object>();
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    if (refused.has(socket)) {
      socket.destroy();
      return;
    }
    refused.add(socket);
    const e = clientErrorOf(err);
    stats.rejected[e.reason]++;
    if (!socket.writable || inFlight.has(socket)) {
      socket.destroy();
      return;
    }
    const body = JSON.stringify({ error: { code: e.code, message: e.message } });
    socket.end(`HTTP/1.1 ${e.status}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
    // A peer that reads nothing would hold the socket open.
    setTimeout(() => socket.destroy(), 1000).unref();
  });
  return server;
}

/** Listen and resolve with the actual address (port 0 picks a free port). */
export function listen(server: Server, host: string, port: number): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve(server.address() as AddressInfo);
    });
  });
}

/** Stop accepting, let in-flight requests finish for up to graceMs, then drop what is left. */
export function closeServer(server: Server, graceMs = 2000): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) {
      resolve();
      return;
    }
    const timer = setTimeout(() => server.closeAllConnections(), graceMs);
    timer.unref();
    server.close(() => {
      clearTimeout(timer);
      resolve();
    });
    server.closeIdleConnections();
  });
}
