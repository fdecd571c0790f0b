// Input attacks on both HTTP servers (the sidecar's --http and the collector's --http): slow
// headers, slow bodies, header floods, garbage request lines, idle keep-alive connections. The
// deadlines are the products' configuration keys (http_headers_timeout_ms, http_request_timeout_ms,
// http_keep_alive_timeout_ms, http_max_header_bytes), set small here so the cases run in seconds.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { type CollectorProc, getJson, startCollector } from '../helpers/collector';
import { RssWatch, byLevel, recordFigures, seed } from '../helpers/figures';
import { type SidecarProc, sleep, startSidecar, statusJson, tempDir } from '../helpers/procs';
import { type RawExchange, rawHttp, timedGet } from '../helpers/raw-http';

const FILE = 'faults/input-http';
const HEADERS_MS = 2000;
const REQUEST_MS = 3000;
const KEEP_ALIVE_MS = 500;
const MAX_HEADER_BYTES = 8192;
/** node:http checks deadlines every quarter of the headers deadline (serverLimits), so a cut comes within 1.25 × the deadline; plus a loaded machine's slack. */
const cutBound = (ms: number) => Math.round(ms * 1.25) + 1500;

const LIMITS = [
  `http_headers_timeout_ms=${HEADERS_MS}`,
  `http_request_timeout_ms=${REQUEST_MS}`,
  `http_keep_alive_timeout_ms=${KEEP_ALIVE_MS}`,
  `http_max_header_bytes=${MAX_HEADER_BYTES}`,
].flatMap((kv) => ['--set', kv]);

interface Target {
  name: 'sidecar' | 'collector';
  port: number;
  pid: number;
  /** The server's count of requests refused for `what`. */
  refused(what: 'timeout' | 'headers' | 'bad'): Promise<number>;
}

const tmp = tempDir('apm-inhttp-');
let sidecar: SidecarProc;
let collector: CollectorProc;
const targets: Target[] = [];

before(async () => {
  [sidecar, collector] = await Promise.all([
    startSidecar(join(tmp.dir, 's'), ['--http', '127.0.0.1:0', ...LIMITS]),
    startCollector(join(tmp.dir, 'collector'), LIMITS),
  ]);
  const line = await sidecar.waitLine('http', (l) => l.msg === 'serving /healthz, /readyz and /metrics');
  const sidecarCodes = { timeout: 'ERR_REQUEST_TIMEOUT', headers: 'ERR_HEADERS_TOO_LARGE', bad: 'ERR_BAD_REQUEST' } as const;
  const collectorReasons = { timeout: 'httpTimeout', headers: 'headersTooLarge', bad: 'badHttp' } as const;
  targets.push(
    {
      name: 'sidecar',
      port: (line.http as { port: number }).port,
      pid: sidecar.pid,
      refused: async (what) => ((await statusJson(sidecar.socket)).counters.httpErrors[sidecarCodes[what]] as number | undefined) ?? 0,
    },
    {
      name: 'collector',
      port: collector.httpPort,
      pid: collector.pid,
      refused: async (what) => (await getJson(collector.httpPort, '/api/stats')).body.rejected[collectorReasons[what]] as number,
    },
  );
});

after(async () => {
  await Promise.all([sidecar?.kill('SIGTERM'), collector?.kill('SIGTERM')]);
  tmp.cleanup();
});

/** GET /healthz every 100 ms until `until` settles; every answer must be 200. Returns the count and the slowest. */
async function honestClient(port: number, until: Promise<unknown>): Promise<{ served: number; maxMs: number; failed: number }> {
  let done = false;
  void until.finally(() => {
    done = true;
  });
  let served = 0;
  let failed = 0;
  let maxMs = 0;
  while (!done) {
    try {
      const r = await timedGet(port, '/healthz');
      if (r.status === 200) served++;
      else failed++;
      maxMs = Math.max(maxMs, r.ms);
    } catch {
      failed++;
    }
    await sleep(100);
  }
  return { served, maxMs, failed };
}

function rss(): RssWatch {
  return new RssWatch(() => ({ sidecar: sidecar.pid, collector: collector.pid }));
}

describe('input attacks on the HTTP servers', () => {
  it('a client sending its headers one byte per second, or nothing, is cut with 408 within http_headers_timeout_ms while an honest client is served meanwhile', async () => {
    const watch = rss();
    const before = await Promise.all(targets.map((t) => t.refused('timeout')));
    const head = 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ';
    const runs = targets.map(async (t) => {
      const slow = rawHttp(t.port, `${head}${'a'.repeat(100)}`, { everyMs: 1000, perTick: 1, giveUpMs: 20_000 });
      const slowLine = rawHttp(t.port, `${head}${'b'.repeat(100)}`, { everyMs: 1000, first: head.length, giveUpMs: 20_000 });
      const silent = rawHttp(t.port, '', { giveUpMs: 20_000 });
      const all = Promise.all([slow, slowLine, silent]);
      const honest = await honestClient(t.port, all);
      return { t, cuts: await all, honest };
    });
    const results = await Promise.all(runs);
    const after = await Promise.all(targets.map((t) => t.refused('timeout')));
    const maxRssMb = watch.stop();
    const cutMs = results.flatMap((r) => r.cuts.map((c) => c.closedAfterMs));
    recordFigures(FILE, {
      case: 'input/http-slow-headers',
      section: 'input',
      load: 'an honest GET /healthz every 100 ms on each server',
      fault: `3 clients per server: headers at 1 byte/s, request line then 1 byte/s, nothing at all; http_headers_timeout_ms=${HEADERS_MS}`,
      lost: 0,
      duplicated: 0,
      maxRssMb,
      recoverMs: null,
      extra: {
        maxCutMs: Math.max(...cutMs),
        minCutMs: Math.min(...cutMs),
        honestServed: results.reduce((a, r) => a + r.honest.served, 0),
        honestFailed: results.reduce((a, r) => a + r.honest.failed, 0),
        honestMaxMs: Math.max(...results.map((r) => r.honest.maxMs)),
        counted: after.reduce((a, n, i) => a + n - (before[i] as number), 0),
      },
    });
    for (const { t, cuts, honest } of results) {
      for (const c of cuts) {
        assert.ok(c.closedAfterMs >= HEADERS_MS - 100, `${t.name}: cut after ${c.closedAfterMs} ms, before the ${HEADERS_MS} ms deadline`);
        assert.ok(c.closedAfterMs <= cutBound(HEADERS_MS), `${t.name}: a slow-headers client was held ${c.closedAfterMs} ms (bound ${cutBound(HEADERS_MS)})`);
        assert.ok(c.status === 408 || c.status === 0, `${t.name}: answered ${c.status}: ${c.text.slice(0, 200)}`);
      }
      assert.equal(honest.failed, 0, `${t.name}: an honest request failed meanwhile`);
      assert.ok(honest.served >= 5, `${t.name}: only ${honest.served} honest requests served`);
    }
    for (const [i, t] of targets.entries())
      assert.ok((after[i] as number) - (before[i] as number) >= 3, `${t.name}: timeouts counted ${before[i]} → ${after[i]}`);
  });

  it('a body sent one byte every 100 ms after whole headers is cut at http_request_timeout_ms, not at the headers deadline, with at most one answer (API, tunnel, sidecar routes)', async () => {
    const watch = rss();
    const body = (path: string, method = 'GET') => `${method} ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5000\r\n\r\n${'x'.repeat(5000)}`;
    const cases: [string, number, string][] = [
      ['sidecar /metrics', targets[0]!.port, body('/metrics')],
      ['collector /api/stats', collector.httpPort, body('/api/stats')],
      ['collector tunnel, first request', collector.httpPort, body('/agent/tunnel', 'POST')],
    ];
    const results = await Promise.all(
      cases.map(async ([name, port, text]) => {
        const head = text.indexOf('\r\n\r\n') + 4;
        return { name, r: await rawHttp(port, text, { everyMs: 100, perTick: 1, first: head, giveUpMs: 20_000 }) };
      }),
    );
    const maxRssMb = watch.stop();
    recordFigures(FILE, {
      case: 'input/http-slow-body',
      section: 'input',
      load: 'none',
      fault: `bodies at 10 bytes/s to a sidecar route, an API route and the tunnel; http_request_timeout_ms=${REQUEST_MS}`,
      lost: 0,
      duplicated: 0,
      maxRssMb,
      recoverMs: null,
      extra: Object.fromEntries(results.map((x) => [`cutMs ${x.name}`, x.r.closedAfterMs])),
    });
    for (const { name, r } of results) {
      assert.ok(r.closedAfterMs >= REQUEST_MS - 100, `${name}: cut after ${r.closedAfterMs} ms, before the ${REQUEST_MS} ms deadline`);
      assert.ok(r.closedAfterMs <= cutBound(REQUEST_MS), `${name}: a slow body was held ${r.closedAfterMs} ms (bound ${cutBound(REQUEST_MS)})`);
      assert.doesNotMatch(r.text, /^HTTP\/1\.1 5/m, `${name}: a 5xx: ${r.text.slice(0, 300)}`);
      // A route that answered before the body ended is cut, not sent a 408 after its answer.
      assert.ok((r.text.match(/^HTTP\/1\.1 \d{3}/gm) ?? []).length <= 1, `${name}: two answers on one request: ${r.text.slice(0, 400)}`);
    }
    for (const t of targets) assert.equal((await timedGet(t.port, '/healthz')).status, 200, `${t.name} still serves`);
  });

  it('header floods (one huge header, thousands of small ones) are answered 431 and counted; headers under the limit are served', async () => {
    const rounds = byLevel(20, 200, 2000);
    const watch = rss();
    const before = await Promise.all(targets.map((t) => t.refused('headers')));
    const huge = `GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Huge: ${'h'.repeat(64 * 1024)}\r\n\r\n`;
    const many = `GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n${Array.from({ length: 3000 }, (_, i) => `X-H${i}: v\r\n`).join('')}\r\n`;
    const underLimit = `GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Ok: ${'o'.repeat(MAX_HEADER_BYTES - 200)}\r\nConnection: close\r\n\r\n`;
    const statuses: Record<string, number> = {};
    for (let i = 0; i < rounds; i++) {
      const rs = await Promise.all(targets.flatMap((t) => [rawHttp(t.port, huge), rawHttp(t.port, many)]));
      for (const r of rs) statuses[r.status] = (statuses[r.status] ?? 0) + 1;
    }
    const honest = await Promise.all(targets.map((t) => rawHttp(t.port, underLimit)));
    const after = await Promise.all(targets.map((t) => t.refused('headers')));
    const maxRssMb = watch.stop();
    recordFigures(FILE, {
      case: 'input/http-header-flood',
      section: 'input',
      load: 'none',
      fault: `${rounds} rounds × (one 64 KiB header, 3000 headers) to each server; http_max_header_bytes=${MAX_HEADER_BYTES}`,
      lost: 0,
      duplicated: 0,
      maxRssMb,
      recoverMs: null,
      extra: { requests: rounds * 4, answered431: statuses[431] ?? 0, counted: after.reduce((a, n, i) => a + n - (before[i] as number), 0) },
    });
    assert.deepEqual(statuses, { 431: rounds * 4 }, 'every flood answered 431');
    for (const [i, t] of targets.entries()) assert.equal((after[i] as number) - (before[i] as number), rounds * 2, `${t.name}: 431s counted`);
    for (const h of honest) assert.equal(h.status, 200, `headers under the limit are served: ${h.text.slice(0, 200)}`);
    assert.ok((maxRssMb.sidecar ?? 0) <= 200 && (maxRssMb.collector ?? 0) <= 250, `RSS bounded: ${JSON.stringify(maxRssMb)}`);
  });

  it('garbage request lines and headers are answered 400 (or a 4xx route answer), never 5xx, and both servers keep serving', async () => {
    const runs = byLevel(300, 3000, 100_000);
    const s = seed();
    const watch = rss();
    const token = fc.stringMatching(/^[!-~]{0,12}$/);
    const garbage = fc.oneof(
      fc.uint8Array({ minLength: 1, maxLength: 300 }).map((a) => Buffer.from(a)),
      fc
        .tuple(
          fc.oneof(token, fc.constantFrom('GET', 'POST', 'PRI', 'CONNECT', 'G\0T', '')),
          fc.string({ maxLength: 80 }),
          fc.oneof(token, fc.constantFrom('HTTP/1.1', 'HTTP/9.9', 'HTTP/1.1\0')),
        )
        .map(([m, u, v]) => Buffer.from(`${m} ${u} ${v}\r\nHost: 127.0.0.1\r\n\r\n`)),
      fc
        .tuple(fc.string({ maxLength: 30 }), fc.string({ maxLength: 60 }), fc.constantFrom('\r\n', '\n', '\r', '\0'))
        .map(([k, v, eol]) => Buffer.from(`GET /healthz HTTP/1.1${eol}Host: 127.0.0.1${eol}${k}: ${v}${eol}${eol}`)),
      fc
        .tuple(
          fc.constantFrom('Content-Length: -1', 'Content-Length: 1, 2', 'Transfer-Encoding: chunked\r\nContent-Length: 3', 'Transfer-Encoding: xyz'),
          fc.string({ maxLength: 20 }),
        )
        .map(([h, b]) => Buffer.from(`POST /api/stats HTTP/1.1\r\nHost: 127.0.0.1\r\n${h}\r\n\r\n${b}`)),
    );
    const statuses: Record<string, number> = {};
    let i = 0;
    await fc.assert(
      fc.asyncProperty(garbage, async (bytes) => {
        const t = targets[i++ % targets.length] as Target;
        const r: RawExchange = await rawHttp(t.port, bytes, { giveUpMs: 10_000, endWrite: true });
        statuses[r.status] = (statuses[r.status] ?? 0) + 1;
        assert.ok(r.status < 500, `${t.name} answered ${r.status} to ${JSON.stringify(bytes.toString('latin1'))}: ${r.text.slice(0, 300)}`);
      }),
      { numRuns: runs, seed: s },
    );
    const alive = await Promise.all(targets.map((t) => timedGet(t.port, '/healthz')));
    const maxRssMb = watch.stop();
    recordFigures(
      FILE,
      {
        case: 'input/http-garbage',
        section: 'input',
        load: 'none',
        fault: 'random bytes, request lines, header lines, bad lengths and encodings, one connection each, alternating servers',
        lost: 0,
        duplicated: 0,
        maxRssMb,
        recoverMs: null,
        extra: { cases: runs, seed: s, statuses: JSON.stringify(statuses) },
      },
      s,
    );
    for (const a of alive) assert.equal(a.status, 200);
    assert.ok(sidecar.alive && collector.alive);
  });

  it('an idle keep-alive connection is closed after http_keep_alive_timeout_ms', async () => {
    const watch = rss();
    const results = await Promise.all(
      targets.map((t) => rawHttp(t.port, 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n', { giveUpMs: 20_000 }).then((r) => ({ t, r }))),
    );
    const maxRssMb = watch.stop();
    recordFigures(FILE, {
      case: 'input/http-keep-alive-idle',
      section: 'input',
      load: 'none',
      fault: `one request, then the connection held open and idle; http_keep_alive_timeout_ms=${KEEP_ALIVE_MS}`,
      lost: 0,
      duplicated: 0,
      maxRssMb,
      recoverMs: null,
      extra: { maxCloseMs: Math.max(...results.map((x) => x.r.closedAfterMs)) },
    });
    for (const { t, r } of results) {
      assert.equal(r.status, 200, t.name);
      assert.ok(r.closedAfterMs <= KEEP_ALIVE_MS + 2000, `${t.name}: an idle keep-alive connection held ${r.closedAfterMs} ms`);
    }
  });
});
