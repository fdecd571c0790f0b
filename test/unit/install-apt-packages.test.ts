import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ROOT } from '../helpers/procs';
import { tempDirsRemovedAfter } from '../helpers/temp-dirs';

/**
 * test/install-apt-packages.sh (make test-deps) with stand-ins for dpkg-query, apt-get and
 * Debian's cluster tools on PATH: installing postgresql makes a cluster "main" (and starts it where
 * services run), as Debian's package does; the script must leave no such cluster behind, and
 * must not touch a cluster that was there before.
 */

const tempDir = tempDirsRemovedAfter('apm-aptdeps-');
const SCRIPT = join(ROOT, 'test', 'install-apt-packages.sh');

function fakeTools(dir: string, installed: string[], clusters: string[]): { bin: string; state: string } {
  const bin = join(dir, 'bin');
  const state = join(dir, 'state');
  mkdirSync(bin);
  mkdirSync(state);
  writeFileSync(join(state, 'installed'), installed.map((p) => `${p}\n`).join(''));
  writeFileSync(join(state, 'clusters'), clusters.map((c) => `${c.replace('/', ' ')} 5432 online postgres /var/lib/postgresql/${c} log\n`).join(''));
  const tools: Record<string, string> = {
    'dpkg-query': `grep -qx "$3" "${state}/installed" && echo 'install ok installed' || exit 1`,
    'apt-get': `echo "apt-get $*" >> "${state}/log"
      if [ "$1" = install ]; then
        for p in "$@"; do case "$p" in -*|install) ;; *) echo "$p" >> "${state}/installed";; esac; done
        if grep -qx postgresql "${state}/installed" && ! grep -q '^15 main ' "${state}/clusters"; then
          echo '15 main 5432 online postgres /var/lib/postgresql/15/main log' >> "${state}/clusters"
        fi
      fi`,
    pg_lsclusters: `[ "$1" = -h ] && cat "${state}/clusters"`,
    pg_dropcluster: `echo "pg_dropcluster $*" >> "${state}/log"; [ "$1" = --stop ] || exit 2; grep -v "^$2 $3 " "${state}/clusters" > "${state}/c.new"; mv "${state}/c.new" "${state}/clusters"`,
  };
  for (const [name, body] of Object.entries(tools)) {
    writeFileSync(join(bin, name), `#!/usr/bin/env bash\n${body}\n`);
    chmodSync(join(bin, name), 0o755);
  }
  return { bin, state };
}

function runScript(bin: string, packages: string[]): string {
  const r = spawnSync('bash', [SCRIPT, ...packages], { env: { ...process.env, PATH: `${bin}:${process.env.PATH}` }, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
}

describe('make test-deps (test/install-apt-packages.sh) and PostgreSQL', () => {
  it('drops the cluster that installing postgresql made, and only that one', (t) => {
    if (process.getuid?.() !== 0) return t.skip('the script installs only as root (or with sudo)');
    const dir = tempDir();
    const { bin, state } = fakeTools(dir, [], ['14/legacy']);
    const out = runScript(bin, ['postgresql']);
    assert.match(out, /dropping PostgreSQL cluster 15\/main made by the install/);
    const log = readFileSync(join(state, 'log'), 'utf8');
    assert.match(log, /apt-get install .*postgresql/);
    assert.match(log, /pg_dropcluster --stop 15 main/);
    assert.doesNotMatch(log, /pg_dropcluster.*legacy/);
    assert.equal(readFileSync(join(state, 'clusters'), 'utf8').trim().split('\n').length, 1, 'the cluster that was there stays');
    assert.match(readFileSync(join(state, 'clusters'), 'utf8'), /^14 legacy /);
  });

  it('does nothing when the packages are installed', () => {
    const dir = tempDir();
    const { bin, state } = fakeTools(dir, ['postgresql'], ['15/main']);
    runScript(bin, ['postgresql']);
    assert.equal(existsSync(join(state, 'log')), false, 'neither apt-get nor pg_dropcluster ran');
  });
});
