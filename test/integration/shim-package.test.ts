import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ROOT, tempDir } from '../helpers/procs';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], cwd: string, env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(cmd, args, { cwd, env: { ...process.env, ...env }, timeout: 120_000, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      // On failure err.code is the exit code (a number), or a string for spawn errors.
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : null;
      resolve({ code, stdout, stderr: err !== null && code === null ? `${stderr}${err.message}` : stderr });
    });
  });
}

interface LsNode {
  dependencies?: Record<string, LsNode>;
}

function allNames(node: LsNode, out = new Set<string>()): Set<string> {
  for (const [name, child] of Object.entries(node.dependencies ?? {})) {
    out.add(name);
    allNames(child, out);
  }
  return out;
}

function jsFiles(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...jsFiles(p));
    else if (name.endsWith('.js')) out.push(p);
  }
  return out;
}

describe('the shim installs with no third-party runtime dependency', () => {
  const tmp = tempDir('apm-shim-pack-');
  const tarballs = join(tmp.dir, 'tarballs');
  const app = join(tmp.dir, 'app');
  // npm writes to its cache even offline: keep it inside the temp dir.
  const npmEnv = { npm_config_cache: join(tmp.dir, 'npm-cache'), npm_config_update_notifier: 'false' };
  let installed: Run;

  before(async () => {
    mkdirSync(tarballs);
    const packed = await run('npm', ['pack', '-w', 'proto', '-w', 'client-shim', '--pack-destination', tarballs, '--json'], ROOT, npmEnv);
    assert.equal(packed.code, 0, `npm pack failed: ${packed.stderr}`);
    const files = (JSON.parse(packed.stdout) as { filename: string }[]).map((f) => join(tarballs, f.filename));
    assert.equal(files.length, 2);
    const proto = files.find((f) => f.includes('apm-sidecar-proto-'));
    const shim = files.find((f) => f.includes('apm-sidecar-shim-'));
    assert.ok(proto && shim, `tarballs: ${files.join(', ')}`);
    mkdirSync(app);
    writeFileSync(join(app, 'package.json'), `${JSON.stringify({ name: 'empty-app', version: '1.0.0', private: true }, null, 2)}\n`);
    installed = await run('npm', ['install', '--offline', '--no-audit', '--no-fund', proto, shim], app, npmEnv);
  });
  after(() => tmp.cleanup());

  it('npm install --offline of the two tarballs into an empty app succeeds', () => {
    assert.equal(installed.code, 0, `npm install failed: ${installed.stderr}`);
  });

  it('npm ls --omit=dev --all lists only @apm-sidecar/* packages', async () => {
    const ls = await run('npm', ['ls', '--omit=dev', '--all', '--json'], app, npmEnv);
    assert.equal(ls.code, 0, ls.stderr);
    const names = allNames(JSON.parse(ls.stdout) as LsNode);
    assert.deepEqual([...names].sort(), ['@apm-sidecar/proto', '@apm-sidecar/shim']);
    const top = readdirSync(join(app, 'node_modules')).filter((n) => !n.startsWith('.'));
    assert.deepEqual(top, ['@apm-sidecar']);
    assert.deepEqual(readdirSync(join(app, 'node_modules', '@apm-sidecar')).sort(), ['proto', 'shim']);
  });

  it('the published manifests declare no other dependency and no install scripts', () => {
    for (const pkg of ['proto', 'shim']) {
      const m = JSON.parse(readFileSync(join(app, 'node_modules', '@apm-sidecar', pkg, 'package.json'), 'utf8')) as Record<string, unknown>;
      for (const field of ['dependencies', 'peerDependencies', 'optionalDependencies', 'bundleDependencies', 'bundledDependencies']) {
        const deps = Object.keys((m[field] as Record<string, string> | undefined) ?? {});
        assert.deepEqual(
          deps.filter((d) => !d.startsWith('@apm-sidecar/')),
          [],
          `${pkg} ${field}`,
        );
      }
      const scripts = (m.scripts as Record<string, string> | undefined) ?? {};
      for (const hook of ['preinstall', 'install', 'postinstall', 'prepare']) assert.equal(scripts[hook], undefined, `${pkg} has a ${hook} script`);
    }
  });

  it('the installed code requires only Node built-ins, @apm-sidecar/proto and its own files', () => {
    const builtins = new Set(builtinModules);
    const bad: string[] = [];
    const seen = new Set<string>();
    for (const pkg of ['proto', 'shim']) {
      for (const file of jsFiles(join(app, 'node_modules', '@apm-sidecar', pkg, 'dist'))) {
        const src = readFileSync(file, 'utf8');
        for (const m of src.matchAll(/\brequire\(\s*["']([^"']+)["']\s*\)|\bimport\(\s*["']([^"']+)["']\s*\)/g)) {
          const spec = (m[1] ?? m[2]) as string;
          seen.add(spec);
          const ok = spec.startsWith('./') || spec.startsWith('../') || spec.startsWith('node:') || builtins.has(spec) || spec === '@apm-sidecar/proto';
          if (!ok) bad.push(`${pkg}/${file.split(`${pkg}/`).pop()}: ${spec}`);
        }
      }
    }
    assert.deepEqual(bad, []);
    // The scan did read the code: the shim's bundle loads node:net (lazily) and node:os.
    assert.ok(seen.has('node:net') && seen.has('node:os'), `specifiers seen: ${[...seen].join(', ')}`);
  });

  it("node -e \"require('@apm-sidecar/shim').connect({socket:'/nonexistent'})\" runs there and exits 0", async () => {
    const r = await run(process.execPath, ['-e', "require('@apm-sidecar/shim').connect({socket:'/nonexistent'})"], app);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, '');
  });

  it('an app using every API of the installed package exits 0 by itself', async () => {
    const script = `
      const { connect } = require('@apm-sidecar/shim');
      const apm = connect({ socket: '/nonexistent/apm.sock', app: 'installed' });
      apm.counter('c', { k: 'v' }).add(1);
      apm.gauge('g').set(2);
      apm.histogram('h').record(3);
      const tx = apm.startTransaction('GET /', { traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' });
      tx.step('sql', 'SELECT 1', 1);
      const h = tx.outgoingHeaders();
      apm.activeStack(tx, ['at x (x.js:1:1)']);
      tx.end();
      apm.event({ type: 'deploy', message: 'v1' });
      apm.snapshot({ a: 1 });
      apm.registerBusinessTransaction('GET /');
      // The HTTP instrumentation is a file of its own in the package, loaded here on first use.
      const http = apm.instrumentHttp();
      const loaded = Object.keys(require.cache).some((f) => f.endsWith('shim-http.js'));
      http.stop();
      console.log(JSON.stringify({ traceparent: h.traceparent, state: apm.state, buffered: apm.stats().buffered, httpLoaded: loaded }));
    `;
    const r = await run(process.execPath, ['-e', script], app);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { traceparent: string; buffered: number; httpLoaded: boolean };
    assert.equal(out.httpLoaded, true, 'instrumentHttp() loads dist/shim-http.js from the installed package');
    assert.match(out.traceparent, /^00-4bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-01$/);
    assert.ok(out.buffered > 0);
  });
});
