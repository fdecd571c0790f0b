'use strict';
/**
 * (h) HTTP auto-instrumentation overhead: requests/s of a trivial server and its CPU per request,
 * without instrumentation, with apm.instrumentHttp() (shim connected to a real sidecar), and with
 * @opentelemetry/instrumentation-http (spans batched to an exporter that drops them) — all three
 * servers measured in the same run, in rotating order, each in its own process.
 *
 *   node bench/http.js [--seconds 3] [--rounds 5] [--connections 16] [--json]
 *
 * Two scenarios: `in` (GET /users/123: the incoming side only) and `in+out` (the handler first calls
 * a bare downstream server through node:http, so the outgoing side — correlation headers, client
 * spans — is included). The load generator is this process (keep-alive connections, one request at
 * a time each); on a small machine it shares the cores with the servers, so requests/s is a ratio
 * between variants, and server CPU µs per request (from /proc) is the overhead figure to compare.
 */
const { spawn } = require('node:child_process');
const { mkdtempSync, rmSync } = require('node:fs');
const http = require('node:http');
const { tmpdir } = require('node:os');
const { join } = require('node:path');
const { cpuSeconds } = require('./lib/proc');
const { median, num, table } = require('./lib/stats');

const ROOT = join(__dirname, '..');
const VARIANTS = ['bare', 'apm', 'otel'];

function arg(name, def) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : def;
}

const children = new Set();
function killAll() {
  for (const c of children) c.kill('SIGKILL');
}
process.on('exit', killAll);
process.on('SIGINT', () => process.exit(130));

/** Start a child and resolve with its first JSON line that satisfies `ready`. */
function start(args, env, ready) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } });
    children.add(child);
    let buf = '';
    child.stdout.on('data', (d) => {
      buf += d;
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        try {
          const j = JSON.parse(line);
          if (ready(j)) resolve({ child, line: j });
        } catch {
          // not JSON
        }
      }
    });
    child.on('exit', (code) => reject(new Error(`${args[0]} exited ${code} before it was ready`)));
  });
}

async function server(variant, env) {
  const { child, line } = await start([join(__dirname, 'http-server-child.js'), variant], env, (j) => j.ready === true);
  return { variant, child, port: line.port };
}

/** `connections` keep-alive loops against port+path for `ms`; the number of responses. */
async function load(port, path, ms, connections) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: connections });
  const end = Date.now() + ms;
  let done = 0;
  let errors = 0;
  const one = () =>
    new Promise((resolve) => {
      http
        .get({ host: '127.0.0.1', port, path, agent }, (res) => {
          res.resume();
          res.on('end', () => {
            if (res.statusCode === 200) done++;
            else errors++;
            resolve();
          });
        })
        .on('error', () => {
          errors++;
          resolve();
        });
    });
  await Promise.all(
    Array.from({ length: connections }, async () => {
      while (Date.now() < end) await one();
    }),
  );
  agent.destroy();
  return { done, errors };
}

async function run({ seconds = 3, rounds = 5, connections = 16 } = {}) {
  const tmp = mkdtempSync(join(tmpdir(), 'apm-bench-http-'));
  try {
    const socket = join(tmp, 'apm.sock');
    const sidecarArgs = [join(ROOT, 'sidecar', 'dist', 'cli.js'), 'run', '--transport', 'debug', '--set', 'debug_output=/dev/null'];
    const sidecar = await start(
      [...sidecarArgs, '--socket', socket, '--data-dir', join(tmp, 'data'), '--set', 'agent_id=bench', '--log-level', 'info'],
      {},
      (j) => typeof j.msg === 'string' && j.msg.includes('listening for shims'),
    );
    const leaf = await server('bare', {});
    const servers = [];
    for (const v of VARIANTS) servers.push(await server(v, { APM_SIDECAR_SOCKET: socket, DOWNSTREAM_PORT: String(leaf.port) }));
    const scenarios = [
      ['in', '/users/123'],
      ['in+out', '/users/123?downstream=1'],
    ];
    const results = {};
    for (const [sc, path] of scenarios) {
      results[sc] = Object.fromEntries(VARIANTS.map((v) => [v, { rps: [], cpuUs: [], sidecarCpuUs: [], errors: 0 }]));
      for (const s of servers) await load(s.port, path, 500, connections); // warm-up: JIT, connections, the shim's session
      for (let r = 0; r < rounds; r++) {
        for (let k = 0; k < servers.length; k++) {
          const s = servers[(k + r) % servers.length];
          const cpu0 = cpuSeconds(s.child.pid);
          const side0 = cpuSeconds(sidecar.child.pid);
          const t0 = process.hrtime.bigint();
          const { done, errors } = await load(s.port, path, seconds * 1000, connections);
          const secs = Number(process.hrtime.bigint() - t0) / 1e9;
          const row = results[sc][s.variant];
          row.rps.push(done / secs);
          row.cpuUs.push(((cpuSeconds(s.child.pid) - cpu0) * 1e6) / Math.max(done, 1));
          row.sidecarCpuUs.push(((cpuSeconds(sidecar.child.pid) - side0) * 1e6) / Math.max(done, 1));
          row.errors += errors;
        }
      }
    }
    return { seconds, rounds, connections, node: process.version, results };
  } finally {
    killAll();
    rmSync(tmp, { recursive: true, force: true });
  }
}

function report(res) {
  const rows = [];
  for (const [sc, byVariant] of Object.entries(res.results)) {
    const bare = byVariant.bare;
    for (const v of VARIANTS) {
      const x = byVariant[v];
      const rps = median(x.rps);
      const cpu = median(x.cpuUs);
      rows.push([
        sc,
        v,
        num(rps),
        `${num((rps / median(bare.rps)) * 100, 1)} %`,
        num(cpu, 1),
        v === 'bare' ? '' : `+${num(cpu - median(bare.cpuUs), 1)}`,
        v === 'apm' ? num(median(x.sidecarCpuUs), 1) : '',
        String(x.errors),
      ]);
    }
  }
  return `\n(h) HTTP instrumentation overhead — ${res.rounds} rounds × ${res.seconds} s per variant, ${res.connections} keep-alive connections, node ${res.node}\n${table(
    ['scenario', 'variant', 'req/s (median)', 'vs bare', 'server CPU µs/req', 'overhead µs/req', 'sidecar CPU µs/req', 'errors'],
    rows,
  )}\n`;
}

module.exports = { run, report };

if (require.main === module) {
  run({ seconds: arg('--seconds', 3), rounds: arg('--rounds', 5), connections: arg('--connections', 16) }).then(
    (res) => {
      if (process.argv.includes('--json')) process.stdout.write(`${JSON.stringify(res, null, 2)}\n`);
      process.stdout.write(report(res));
    },
    (err) => {
      console.error(err);
      process.exit(1);
    },
  );
}
