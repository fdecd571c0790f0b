import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { ROOT, tempDir, waitFor } from '../helpers/procs';

/**
 * `make demo` (examples/demo.sh) with short durations: the outage timeline in its output, the page
 * still up at the end until Ctrl-C, and Ctrl-C at any moment leaving no process and no files.
 * Ctrl-C is sent the way a terminal sends it: SIGINT to the demo's whole process group.
 */
interface Run {
  child: ChildProcess;
  out: () => string;
  exited: Promise<number | null>;
}

const FAST = { LOAD_SECONDS: '1', OUTAGE_SECONDS: '5' };

function runDemo(tmpdir: string, env: Record<string, string>): Run {
  const child = spawn('bash', [join(ROOT, 'examples', 'demo.sh')], {
    cwd: ROOT,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, TMPDIR: tmpdir, KEEP: '', ...env },
  });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => {
    out += d.toString();
  });
  child.stderr?.on('data', (d: Buffer) => {
    out += d.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code, signal) => resolve(code ?? (signal === null ? null : 128))));
  return { child, out: () => out, exited };
}

/** Ctrl-C as a terminal sends it; the demo may have ended already (a failed wait). */
function interrupt(run: Run): void {
  try {
    process.kill(-(run.child.pid as number), 'SIGINT');
  } catch {
    // no such process group: it has exited
  }
}

/** Processes (other than this one) whose environment names `tmpdir` as TMPDIR: every child of the demo inherits it. */
function processesOf(tmpdir: string): number[] {
  const mine: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d) || Number(d) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${d}/environ`, 'latin1').split('\0').includes(`TMPDIR=${tmpdir}`)) mine.push(Number(d));
    } catch {
      // gone meanwhile, or not readable: not ours
    }
  }
  return mine;
}

/** Ctrl-C while at least `running` processes of the demo (itself included) are up; then nothing is left. */
async function interruptAndCheck(run: Run, tmpdir: string, running: number): Promise<string> {
  const up = processesOf(tmpdir).length;
  assert.ok(up >= running, `the demo runs its processes: ${up}`);
  interrupt(run);
  const code = await run.exited;
  assert.equal(code, 130, run.out());
  const out = run.out();
  assert.match(out, /demo: interrupted: stopping what it started\n/);
  assert.match(out, /demo: stopped\n/);
  assert.doesNotMatch(out, /exited early|timed out|did not stop|did not reach/);
  // The sidecar's SIGTERM flush finished before the demo exited: nothing of it is left.
  await waitFor('every process of the demo to be gone', () => processesOf(tmpdir).length === 0, 5000).catch(() => {
    throw new Error(`left running: ${processesOf(tmpdir).join(', ')}`);
  });
  assert.deepEqual(readdirSync(tmpdir), [], 'the temporary directory is removed');
  return out;
}

describe('make demo (examples/demo.sh)', { concurrency: false }, () => {
  const tmp = tempDir();
  after(() => tmp.cleanup());

  test('unattended, it shows reconnecting → standby → muted → active, the outage metrics arriving afterwards, and exits 0', async () => {
    const dir = join(tmp.dir, 'a');
    mkdirSync(dir);
    const run = runDemo(dir, FAST);
    const code = await run.exited;
    const out = run.out();
    assert.equal(code, 0, out);
    const order = ['active → reconnecting', 'reconnecting → standby', 'standby → muted', 'the collector is back', 'muted → active'].map((s) => out.indexOf(s));
    assert.ok(
      order.every((i, k) => i >= 0 && (k === 0 || i > (order[k - 1] as number))),
      `states in order: ${order}\n${out}`,
    );
    const m = /http\.server\.requests at the collector: (\d+) before the outage, (\d+) now \(\+(\d+)\);\nof them (\d+) in the intervals of the outage/.exec(
      out,
    );
    assert.ok(m, out);
    const [before, now, during] = [Number(m[1]), Number(m[2]), Number(m[4])];
    assert.ok(before > 0 && now > before && during > 0, m[0]);
    assert.match(out, /http:\/\/127\.0\.0\.1:\d+\/\nread token \(paste it into the page\): \S{20,}\n/);
    assert.match(out, /==> done\n$/);
    assert.deepEqual(readdirSync(dir), [], 'the temporary directory is removed');
    assert.deepEqual(processesOf(dir), []);
  });

  test('with DEMO_HOLD=1 the page stays up with the printed token until Ctrl-C, which stops everything', async () => {
    const dir = join(tmp.dir, 'b');
    mkdirSync(dir);
    const run = runDemo(dir, { ...FAST, DEMO_HOLD: '1' });
    try {
      await waitFor('the demo to hold', () => run.out().includes('Ctrl-C stops it'), 120000, 200);
      const m = /(http:\/\/127\.0\.0\.1:\d+\/)\nread token \(paste it into the page\): (\S+)\n/.exec(run.out());
      assert.ok(m, run.out());
      const [url, token] = [m[1] as string, m[2] as string];
      assert.equal((await fetch(url)).status, 200, 'the page');
      const agents = await fetch(`${url}api/agents`, { headers: { authorization: `Bearer ${token}` } });
      assert.equal(agents.status, 200);
      assert.ok(((await agents.json()) as { agentId: string }[]).some((a) => a.agentId === 'demo-agent'));
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(run.child.exitCode, null, 'still holding');
    } catch (err) {
      interrupt(run);
      throw err;
    }
    // The demo and the collector.
    await interruptAndCheck(run, dir, 2);
  });

  test('Ctrl-C in the middle of the outage stops every process it started and removes its files', async () => {
    const dir = join(tmp.dir, 'c');
    mkdirSync(dir);
    const run = runDemo(dir, { ...FAST, OUTAGE_SECONDS: '30' });
    try {
      await waitFor('the outage', () => run.out().includes('reconnecting → standby'), 120000, 100);
    } catch (err) {
      interrupt(run);
      throw err;
    }
    // The demo, the sidecar, the app, the load generator and the state follower.
    const out = await interruptAndCheck(run, dir, 5);
    assert.doesNotMatch(out, /==> done/);
  });
});
