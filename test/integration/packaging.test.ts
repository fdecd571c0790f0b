import assert from 'node:assert/strict';
import { copyFileSync, cpSync, lstatSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { ROOT, runToEnd } from '../helpers/procs';
import { tempDirsRemovedAfter } from '../helpers/temp-dirs';

const tempDir = tempDirsRemovedAfter('apm-packaging-');
const NPM = ['--offline', '--no-audit', '--no-fund', '--ignore-scripts'];

/**
 * A checkout as `npm ci` sees it before `make build`: the root workspaces and the two CLI packages
 * with their committed files, no dist/. The packages' dependencies are left out (an offline install
 * needs no registry); the built dist/ linked in later resolves them from this repository.
 */
function checkout(): string {
  const dir = tempDir();
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'checkout', private: true, workspaces: ['sidecar', 'collector'] }));
  for (const pkg of ['sidecar', 'collector']) {
    mkdirSync(join(dir, pkg));
    const manifest = JSON.parse(readFileSync(join(ROOT, pkg, 'package.json'), 'utf8')) as Record<string, unknown>;
    delete manifest.dependencies;
    delete manifest.devDependencies;
    writeFileSync(join(dir, pkg, 'package.json'), JSON.stringify(manifest));
    cpSync(join(ROOT, pkg, 'bin'), join(dir, pkg, 'bin'), { recursive: true });
  }
  return dir;
}

describe('packaging', () => {
  test('npm install before the build links apm-sidecar and apm-collector; they work once dist/ is built', async () => {
    const dir = checkout();
    const install = await runToEnd('npm', ['install', ...NPM, '--prefix', dir, '--cache', join(dir, '.npm-cache')]);
    assert.equal(install.code, 0, install.stderr);
    for (const bin of ['apm-sidecar', 'apm-collector']) assert.ok(lstatSync(join(dir, 'node_modules', '.bin', bin)).isSymbolicLink(), `${bin} linked`);

    const run = (bin: string) => runToEnd('npx', ['--offline', '--no', '--', bin, '--help'], { npm_config_cache: join(dir, '.npm-cache') }, dir);
    const early = await run('apm-sidecar');
    assert.equal(early.code, 1);
    assert.match(early.stderr, /not built yet: run `make build`/);

    // The build: dist/ appears next to the committed bin/.
    for (const pkg of ['sidecar', 'collector']) symlinkSync(join(ROOT, pkg, 'dist'), join(dir, pkg, 'dist'));
    const sidecar = await run('apm-sidecar');
    assert.equal(sidecar.code, 0, sidecar.stderr);
    assert.match(sidecar.stdout, /^Usage: apm-sidecar/);
    const collector = await run('apm-collector');
    assert.equal(collector.code, 0, collector.stderr);
    assert.match(collector.stdout, /^Usage: apm-collector/);
  });

  test('the root .dockerignore has the same patterns as deploy/Dockerfile.dockerignore', () => {
    const patterns = (file: string) =>
      readFileSync(file, 'utf8')
        .split('\n')
        .filter((l) => l.trim() !== '' && !l.startsWith('#'));
    assert.deepEqual(patterns(join(ROOT, '.dockerignore')), patterns(join(ROOT, 'deploy', 'Dockerfile.dockerignore')));
  });

  test('.gitignore and the Docker ignore files keep out access keys, tokens, data directories and packed tarballs', async () => {
    const secrets = ['access.key', 'deploy/read.token', 'tls/server.pem', 'data/collector.db', 'apm-data/retention.sqlite', 'x/retention.sqlite-wal'];
    const packed = ['apm-sidecar-sidecar-0.1.0.tgz', 'client-shim/apm-sidecar-shim-0.1.0.tgz', 'release.tar.gz'];
    const kept = ['sidecar/src/data-dir.ts', 'collector/src/cli/tokens.ts', 'README.md'];
    for (const [what, file] of [
      ['.gitignore', join(ROOT, '.gitignore')],
      ['deploy/Dockerfile.dockerignore', join(ROOT, 'deploy', 'Dockerfile.dockerignore')],
      ['.dockerignore', join(ROOT, '.dockerignore')],
    ] as const) {
      // A repository of its own with only this file's patterns.
      const repo = tempDir();
      assert.equal((await runToEnd('git', ['init', '-q', repo])).code, 0);
      copyFileSync(file, join(repo, '.gitignore'));
      const ignored = async (p: string) => (await runToEnd('git', ['-C', repo, 'check-ignore', '-q', '--no-index', p])).code === 0;
      for (const p of [...secrets, ...packed]) assert.ok(await ignored(p), `${what} ignores ${p}`);
      for (const p of kept) assert.ok(!(await ignored(p)), `${what} keeps ${p}`);
    }
  });
});
