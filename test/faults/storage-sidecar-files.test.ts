/**
 * Storage faults on the sidecar's retention files (retention.db and its -wal): made unreadable,
 * torn, flipped. Each case retains acked values while the collector is unreachable, damages the
 * files, then starts a sidecar on them with the collector reachable, and checks with the ledger
 * that every acked value the files still held arrives exactly once, and that the new sidecar
 * serves (acks a fresh app's frames) within 5 s of its start.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, openSync, readSync, closeSync, writeSync, statSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { cleanupsAfterEach } from '../helpers/cleanups';
import { type CollectorProc, createKey, FAST_SIDECAR, startCollector } from '../helpers/collector';
import { RssWatch, byLevel, recordFigures } from '../helpers/figures';
import { addTallies, collectorSums, judge, type LoadApp, startLoadApp, tallyOf } from '../helpers/ledger';
import { Gate, sidecarStatus } from '../helpers/outage';
import { Proc, SIDECAR_CLI, type SidecarProc, sidecarListening, sleep, tempDir, waitFor } from '../helpers/procs';

const FILE = 'faults/storage-sidecar-files';
const NOBODY = 65534;
const MAX_RECOVER_MS = 5000;
/** Sidecar memory bound: a few hundred retained points and one shim; 200 MiB is several times its idle RSS. */
const MAX_SIDECAR_RSS_MB = 200;

const tmp = tempDir('apm-fstore-f-');
// The unprivileged sidecar must reach its directories below this one.
chmodSync(tmp.dir, 0o711);
after(() => tmp.cleanup());
const cleanups = cleanupsAfterEach();

let collector: CollectorProc;
let key: string;
before(async () => {
  const data = join(tmp.dir, 'collector');
  key = await createKey(data, 'fstore');
  collector = await startCollector(data);
});
after(() => collector?.kill('SIGTERM'));

interface CaseDirs {
  socketDir: string;
  dataDir: string;
}

function dirsFor(name: string, owner: number): CaseDirs {
  const socketDir = join(tmp.dir, `${name}-sock`);
  const dataDir = join(tmp.dir, `${name}-data`);
  for (const d of [socketDir, dataDir]) {
    mkdirSync(d, { mode: 0o700 });
    chownSync(d, owner, owner);
  }
  return { socketDir, dataDir };
}

/** `apm-sidecar run` over TCP to `port`, as root or (uid 65534) as nobody; resolves once it listens. */
async function sidecar(d: CaseDirs, agentId: string, port: number, asNobody: boolean): Promise<SidecarProc> {
  const socket = join(d.socketDir, 'apm.sock');
  const args = [
    SIDECAR_CLI,
    'run',
    '--socket',
    socket,
    '--data-dir',
    d.dataDir,
    '--transport',
    'tcp',
    '--server-host',
    '127.0.0.1',
    '--server-port',
    String(port),
    '--set',
    `agent_id=${agentId}`,
    ...FAST_SIDECAR,
  ];
  // setpriv execs the program (runuser would stay its parent): kill -9 reaches the sidecar itself.
  const [cmd, cmdArgs] = asNobody
    ? ['setpriv', [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', process.execPath, ...args]]
    : [process.execPath, args];
  const p = new Proc(
    spawn(cmd, cmdArgs as string[], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, APM_SIDECAR_ACCESS_KEY: key } }),
  ) as SidecarProc;
  p.socket = socket;
  cleanups.push(() => p.kill('SIGKILL'));
  await sidecarListening(p);
  return p;
}

function loadApp(sc: SidecarProc, app: string, series: string[]): LoadApp {
  const p = startLoadApp(sc.socket, app, series, { APM_SIDECAR_SOCKET_OWNER: String(NOBODY) });
  cleanups.push(() => p.kill('SIGKILL'));
  return p;
}

interface DamageCase {
  id: string;
  name: string;
  fault: string;
  /** Run the sidecars as nobody (root ignores file modes). */
  asNobody?: boolean;
  /** Damage the stopped sidecar's files; returns figures to record. */
  damage: (d: CaseDirs) => Record<string, number | string | boolean>;
  /** Checked on the restarted sidecar once it delivered. */
  check?: (sc: SidecarProc, d: CaseDirs) => Promise<void> | void;
}

/**
 * The common shape: retain while the collector is away, stop the app (everything it recorded is
 * acked), let the open interval be sealed, kill -9 the sidecar, damage, restart with the collector
 * reachable, start a second app, and judge both apps' totals at the collector.
 */
async function damageCase(c: DamageCase): Promise<void> {
  const owner = c.asNobody === true ? NOBODY : 0;
  const d = dirsFor(c.name, owner);
  const series = [`storage.${c.name}.a`, `storage.${c.name}.b`];
  const gate = new Gate(collector.port);
  const port = await gate.open();
  await gate.cut();
  cleanups.push(() => gate.cut());
  const first = await sidecar(d, `fstore-${c.name}`, port, c.asNobody === true);
  const app1 = loadApp(first, `${c.name}-1`, series);
  let sidecarPid = first.pid;
  const rss = new RssWatch(() => ({ sidecar: sidecarPid }));
  await waitFor('values acked into the retention', () => (tallyOf(app1).acked[series[0] as string] ?? 0) >= byLevel(30, 150));
  app1.kill('SIGTERM');
  await app1.exited;
  // Sealed: the open interval's frames became packs (metric_interval_ms 200).
  await waitFor('the retained intervals to be sealed', async () => {
    const s = await sidecarStatus(first.socket);
    return s.retention.frames === 0 && s.retention.packs > 0;
  });
  await first.kill('SIGKILL');
  const damaged = c.damage(d);

  await gate.open();
  // The second app is already waiting (its shim retries the socket): the recovery measured is
  // the sidecar's, from its start to its first ack.
  const app2 = loadApp(first, `${c.name}-2`, series);
  await waitFor('the second app to record', () => tallyOf(app2).recorded[series[0] as string] !== undefined);
  const restartAt = Date.now();
  const second = await sidecar(d, `fstore-${c.name}`, port, c.asNobody === true);
  sidecarPid = second.pid;
  await waitFor('the restarted sidecar to ack a fresh app', () => tallyOf(app2).acked[series[0] as string] !== undefined, 15000, 10);
  const recoverMs = Date.now() - restartAt;
  await sleep(500);
  app2.kill('SIGTERM');
  await app2.exited;
  const tally = addTallies(tallyOf(app1), tallyOf(app2));
  await waitFor(
    'the acked values at the collector',
    async () => {
      const sums = await collectorSums(collector, series);
      return series.every((n) => (sums[n] ?? 0) >= (tally.acked[n] ?? 0));
    },
    10000,
  ).catch(() => null); // a shortfall is judged (and recorded) below
  await sleep(byLevel(600, 1500)); // a few metric intervals (200 ms): a late duplicate would show
  const v = judge(tally, await collectorSums(collector, series));
  const s = await sidecarStatus(second.socket);
  const maxRssMb = rss.stop();
  recordFigures(FILE, {
    case: c.id,
    section: 'storage',
    load: `2 apps × ${series.length} counters every 20 ms, one before and one after the fault`,
    fault: c.fault,
    lost: v.lost,
    duplicated: v.duplicated,
    maxRssMb,
    recoverMs,
    extra: {
      ...damaged,
      retained: tallyOf(app1).acked[series[0] as string] ?? 0,
      condition: String(s.retention.condition),
      retentionErrors: s.counters.retentionErrors,
      refused: s.counters.retentionRefused,
    },
  });
  assert.equal(v.lost, 0, JSON.stringify(v.perSeries));
  assert.equal(v.duplicated, 0, JSON.stringify(v.perSeries));
  assert.ok(recoverMs <= MAX_RECOVER_MS, `serving ${recoverMs} ms after the restart`);
  assert.equal(s.retention.condition, 'ok');
  assert.ok((maxRssMb.sidecar ?? 0) <= MAX_SIDECAR_RSS_MB, `sidecar RSS ${maxRssMb.sidecar} MiB`);
  await c.check?.(second, d);
}

/** XOR `n` bytes of `path` at `offset` with 0xff. */
function flipBytes(path: string, offset: number, n: number): void {
  const fd = openSync(path, 'r+');
  try {
    const b = Buffer.alloc(n);
    const got = readSync(fd, b, 0, n, offset);
    for (let i = 0; i < got; i++) b[i] = (b[i] as number) ^ 0xff;
    writeSync(fd, b, 0, got, offset);
  } finally {
    closeSync(fd);
  }
}

/** Move what the WAL holds into retention.db, as SQLite does on its own once the WAL is long enough. */
function checkpoint(dataDir: string): void {
  const db = new Database(join(dataDir, 'retention.db'));
  try {
    db.pragma('wal_checkpoint(TRUNCATE)');
  } finally {
    db.close();
  }
}

/** WAL layout: a 32-byte header, then frames of a 24-byte header and one page. */
const WAL_HEADER = 32;
const FRAME_HEADER = 24;

/** Run a command as nobody: root ignores file modes, so an unreadable file is only unreadable to another user. */
function asNobody(cmd: string, args: string[]): void {
  const r = spawnSync('runuser', ['-u', 'nobody', '--', cmd, ...args], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
}

describe('storage faults on the sidecar retention files', () => {
  test('retention.db and its WAL made unreadable (chmod 000 by their owner) while the sidecar was down: restored to 0600, nothing retained is lost', async () => {
    await damageCase({
      id: 'storage/sidecar-db-unreadable',
      name: 'unreadable',
      asNobody: true,
      fault: 'kill -9, then retention.db, -wal and -shm chmod 000 by their owner (nobody), then a restart as nobody',
      damage: (d) => {
        const files = ['retention.db', 'retention.db-wal', 'retention.db-shm'].map((f) => join(d.dataDir, f));
        asNobody('chmod', ['000', ...files]);
        return { mode: '000' };
      },
      check: (sc, d) => {
        assert.equal(statSync(join(d.dataDir, 'retention.db')).mode & 0o777, 0o600);
        assert.equal(sc.logs(/moved aside/).length, 0, 'not quarantined');
      },
    });
  });

  test('bytes flipped in the index pages of retention.db while the sidecar was down: the file fails its check and is quarantined, every row of its tables is kept', async () => {
    await damageCase({
      id: 'storage/sidecar-db-bitflip',
      name: 'bitflip',
      fault: 'kill -9, checkpoint, then 64 bytes flipped in the root page of every index of retention.db, then a restart',
      damage: (d) => {
        checkpoint(d.dataDir);
        const path = join(d.dataDir, 'retention.db');
        const db = new Database(path, { readonly: true });
        const pageSize = db.pragma('page_size', { simple: true }) as number;
        const roots = (db.prepare("SELECT rootpage FROM sqlite_schema WHERE type = 'index'").all() as { rootpage: number }[]).map((r) => r.rootpage);
        db.close();
        // Past the page header, into the cell pointers and cells.
        for (const root of roots) flipBytes(path, (root - 1) * pageSize + 12, 64);
        return { indexPagesFlipped: roots.length };
      },
      check: (sc, d) => {
        assert.equal(sc.logs(/moved aside/).length, 1, 'quarantined');
        assert.equal(sc.logs(/salvaged [1-9]\d* rows from the quarantined retention/).length, 1, 'its rows copied into the fresh file');
        assert.ok(statSync(join(d.dataDir, 'retention.db')).isFile());
      },
    });
  });

  test("the WAL's last frame torn in the middle of its page while the sidecar was down (a crash during a write): the last transaction is rolled back, everything committed before it is delivered", async () => {
    await damageCase({
      id: 'storage/sidecar-wal-truncated',
      name: 'waltorn',
      fault: 'kill -9, then retention.db-wal truncated in the middle of the page of its last frame, then a restart',
      damage: (d) => {
        const wal = join(d.dataDir, 'retention.db-wal');
        const size = statSync(wal).size;
        const pageSize = 4096;
        const frames = Math.floor((size - WAL_HEADER) / (FRAME_HEADER + pageSize));
        assert.ok(frames >= 2, `a WAL of ${size} bytes`);
        const cut = WAL_HEADER + (frames - 1) * (FRAME_HEADER + pageSize) + FRAME_HEADER + pageSize / 2;
        truncateSync(wal, cut);
        return { walBytes: size, cutAt: cut, walFrames: frames };
      },
    });
  });
});
