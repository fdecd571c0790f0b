/**
 * The fault proxy's cases (test/faults/proxy-*.test.ts) share one rig per file:
 *
 *   load apps ─IPC─▶ [ipc proxy] ─▶ sidecar (transport tcp) ─TCP─▶ proxy ─▶ collector
 *
 * and one way to run a case: start the load, apply a fault, watch the sidecar reach the states the
 * fault should bring, lift it, wait for normal service (an ack after the fault), stop the load, and
 * judge every series: acked ≤ collector ≤ recorded (ledger.ts).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type CollectorProc, FAST_SIDECAR, createKey, getJson, startCollector } from './collector';
import { FaultProxy, type ProxyStats } from './fault-proxy';
import { RssWatch, recordFigures } from './figures';
import { type LoadApp, type Tally, type Verdict, addTallies, collectorSums, judge, startLoadApp, tallyOf } from './ledger';
import { sidecarStatus } from './outage';
import { type SidecarProc, sleep, startSidecar, tempDir, waitFor } from './procs';

/** Upstream timeouts of the rig, short so a dead link is found in about a second (DESIGN §5, §7). */
export const RIG = {
  /** Sidecar: a session that receives nothing this long ends (ERR_SO_TIMEOUT); it pings after a third of it. */
  soTimeoutMs: 1200,
  /** Collector: an idle session is pinged after this long and closed when no pong follows within as long again. */
  idlePingMs: 400,
  /** Sidecar: unreachable this long after the loss → standby. */
  standbyAfterMs: 2500,
  /** Sidecar: this many failed rounds → muted. */
  muteAfterAttempts: 3,
  /** Sidecar and collector: the reporting interval; the judge waits a few of them for a late duplicate. */
  metricIntervalMs: 200,
} as const;

/** The session's end the sidecar logged, as the cause of its state change. */
export const soTimeoutCause = /tcp_so_timeout/;
/** Detection bound: the configured timeout, its check interval (a third of it) and slack for a loaded machine. */
export const SO_DETECT_MS = RIG.soTimeoutMs + RIG.soTimeoutMs / 3 + 2000;
/** The collector closes a session whose ping goes unanswered after 2 × idle_ping_ms; the sidecar's own tcp_so_timeout may come first. */
export const PING_DETECT_MS = Math.min(2 * RIG.idlePingMs, RIG.soTimeoutMs) + RIG.soTimeoutMs / 3 + 2000;

export function stayedActive(rig: Rig, t0: number): void {
  const changes = stateChanges(rig.sidecar, t0);
  assert.deepEqual(changes, [], 'the sidecar stayed active');
}

export interface Rig {
  dir: string;
  collector: CollectorProc;
  proxy: FaultProxy;
  sidecar: SidecarProc;
  /** Where apps connect: the sidecar's socket, or the IPC proxy in front of it. */
  appSocket: string;
  ipcProxy: FaultProxy | null;
  close(): Promise<void>;
}

/** Collector, proxy, sidecar (and with `ipc`, a proxy on the shims' Unix socket). */
export async function startRig(name: string, o: { ipc?: boolean } = {}): Promise<Rig> {
  const tmp = tempDir(`apm-${name}-`);
  const data = join(tmp.dir, 'collector');
  const key = await createKey(data, name);
  const collector = await startCollector(data, ['--set', `idle_ping_ms=${RIG.idlePingMs}`]);
  const proxy = new FaultProxy({ listen: { host: '127.0.0.1', port: 0 }, target: { host: '127.0.0.1', port: collector.port } });
  await proxy.start();
  const sidecar = await startSidecar(
    join(tmp.dir, 'sc'),
    [
      '--transport',
      'tcp',
      '--server-host',
      '127.0.0.1',
      '--server-port',
      String(proxy.port),
      '--set',
      `agent_id=${name}`,
      ...FAST_SIDECAR,
      '--set',
      `metric_interval_ms=${RIG.metricIntervalMs}`,
      '--set',
      `tcp_so_timeout=${RIG.soTimeoutMs}`,
      '--set',
      `standby_after_ms=${RIG.standbyAfterMs}`,
      '--set',
      `mute_after_attempts=${RIG.muteAfterAttempts}`,
    ],
    { APM_SIDECAR_ACCESS_KEY: key },
  );
  let ipcProxy: FaultProxy | null = null;
  let appSocket = sidecar.socket;
  if (o.ipc === true) {
    appSocket = join(tmp.dir, 'proxy.sock');
    ipcProxy = new FaultProxy({ listen: { path: appSocket }, target: { path: sidecar.socket } });
    await ipcProxy.start();
  }
  await waitFor('the sidecar to be active', async () => (await sidecarStatus(sidecar.socket)).state === 'active', 15000);
  return {
    dir: tmp.dir,
    collector,
    proxy,
    sidecar,
    appSocket,
    ipcProxy,
    async close() {
      await sidecar.kill('SIGTERM');
      await ipcProxy?.close();
      await proxy.close();
      await collector.kill('SIGTERM');
      tmp.cleanup();
    },
  };
}

/** A state change the sidecar logged (`from → to`), with its time. */
export interface StateChange {
  at: number;
  from: string;
  to: string;
  cause: string;
}

/** The sidecar's state changes (its `from → to` log lines; pino's ISO time) at or after `since`. */
export function stateChanges(sc: SidecarProc, since: number): StateChange[] {
  return sc.lines
    .filter((l) => l.event === 'state')
    .map((l) => ({ at: Date.parse(String(l.time)), from: String(l.from), to: String(l.to), cause: String(l.cause) }))
    .filter((c) => c.at >= since);
}

/** The first change to `to` at or after `since`, waited for up to `withinMs`. */
export function reached(sc: SidecarProc, to: string, since: number, withinMs: number): Promise<StateChange> {
  return waitFor(`the sidecar to reach ${to}`, () => stateChanges(sc, since).find((c) => c.to === to), withinMs);
}

/** Normal service again: active, and an ack received after `since`. Resolves with that moment. */
export async function serviceBack(sc: SidecarProc, since: number, withinMs = 15000): Promise<number> {
  const st = await waitFor(
    'the sidecar to be active with an ack after the fault',
    async () => {
      const s = await sidecarStatus(sc.socket);
      const ackAt = s.upstream?.lastAckAt ? Date.parse(s.upstream.lastAckAt as string) : 0;
      return s.state === 'active' && ackAt >= since ? ackAt : null;
    },
    withinMs,
  );
  return st;
}

export interface Load {
  apps: LoadApp[];
  series: string[];
  /** Resolves once every app has had a flush acked (the load is flowing). */
  flowing(): Promise<void>;
  /** SIGTERM every app; each flushes what it can and prints its last bounds. */
  stop(): Promise<Tally>;
}

/** `apps` load apps, one series each (`<id>.<i>`), adding 1 every TICK_MS. */
export function startLoad(rig: Rig, id: string, apps: number, tickMs: number): Load {
  const series = Array.from({ length: apps }, (_, i) => `${id.replace('/', '.')}.${i}`);
  const procs = series.map((s, i) => startLoadApp(rig.appSocket, `${id}-${i}`, [s], { TICK_MS: tickMs, FLUSH_TIMEOUT_MS: 1000 }));
  return {
    apps: procs,
    series,
    async flowing() {
      await waitFor('every app to have a flush acked', () => procs.every((p) => p.lines.some((l) => l.acked !== undefined)), 15000);
    },
    async stop() {
      await Promise.all(procs.map((p) => p.kill('SIGTERM')));
      return addTallies(...procs.map(tallyOf));
    },
  };
}

/**
 * Wait until the collector holds at least every acked value (or the deadline passes), then a settle
 * of a few reporting intervals so a late duplicate would show, and judge.
 */
export async function settleAndJudge(rig: Rig, tally: Tally, withinMs = 20000): Promise<Verdict> {
  const names = Object.keys(tally.recorded);
  const complete = async (): Promise<boolean> => {
    const sums = await collectorSums(rig.collector, names);
    return names.every((n) => (sums[n] ?? 0) >= (tally.acked[n] ?? 0));
  };
  await waitFor('the collector to hold every acked value', complete, withinMs).catch(() => undefined);
  await sleep(RIG.metricIntervalMs * 3);
  return judge(tally, await collectorSums(rig.collector, names));
}

export interface Counts {
  sessionErrors: Record<string, number>;
  sessions: number;
  dropped: Record<string, number>;
  duplicates: number;
  rejected: Record<string, number>;
  ipcErrors: Record<string, number>;
  lastAckAgeMs: number | null;
  /** The proxies' own counters (what they did), copied. */
  proxy: ProxyStats;
  ipcProxy: ProxyStats | null;
}

/** The sidecar's and the collector's counters that name a fault's cause. */
export async function counts(rig: Rig): Promise<Counts> {
  const s = await sidecarStatus(rig.sidecar.socket);
  const stats = (await getJson(rig.collector.httpPort, '/api/stats', rig.collector.httpHost)).body as { rejected: Record<string, number> };
  return {
    sessionErrors: { ...(s.upstream?.sessionErrors as Record<string, number>) },
    sessions: s.upstream?.sessions as number,
    dropped: { ...(s.counters?.dropped as Record<string, number>) },
    duplicates: s.counters?.duplicates as number,
    rejected: { ...stats.rejected },
    ipcErrors: { ...(s.counters?.ipcErrors as Record<string, number>) },
    lastAckAgeMs: (s.upstream?.lastAckAgeMs as number | null) ?? null,
    proxy: structuredClone(rig.proxy.stats),
    ipcProxy: rig.ipcProxy === null ? null : structuredClone(rig.ipcProxy.stats),
  };
}

/** b − a per key (counters only grow). */
export function delta(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
    const d = (b[k] ?? 0) - (a[k] ?? 0);
    if (d !== 0) out[k] = d;
  }
  return out;
}

/** The RSS roles of a case: the sidecar, the collector, the test process (it runs the proxy) and the apps. */
export function rssRoles(rig: Rig, load: Load): () => Record<string, number | undefined> {
  return () => {
    const r: Record<string, number | undefined> = { sidecar: rig.sidecar.pid, collector: rig.collector.pid, proxy: process.pid };
    load.apps.forEach((a, i) => {
      r[`app${i}`] = a.alive ? a.pid : undefined;
    });
    return r;
  };
}

/** The apps' RSS folded into one role (the largest), for the figures. */
export function foldRss(w: RssWatch): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(w.stop())) {
    const role = k.startsWith('app') ? 'app' : k;
    out[role] = Math.max(out[role] ?? 0, v);
  }
  return out;
}

/** One fault case: how the fault is put on and what it must bring about while it lasts. */
export interface ProxyCase {
  /** `proxy/<name>`: the figures' row. */
  id: string;
  /** The fault, in words, for the figures. */
  fault: string;
  apply(rig: Rig): void;
  /**
   * While the fault lasts: wait for the states it must bring (their bounds are the case's
   * assertions) and return what was measured. The fault is lifted when this returns or throws.
   */
  during(rig: Rig, t0: number): Promise<Record<string, number | string | boolean>>;
  /** Lift the fault (default: every toxic of both proxies cleared). */
  lift?(rig: Rig): void;
  /** Normal service after the lift, as a moment (default: the sidecar active with a fresh upstream ack). */
  recovered?(rig: Rig, lifted: number, load: Load): Promise<number>;
  /** The counters must name the fault's cause: compare them before and after. */
  causes(before: Counts, after: Counts, rig: Rig): void;
}

export interface CaseResult {
  verdict: Verdict;
  recoverMs: number | null;
  maxRssMb: Record<string, number>;
  extra: Record<string, number | string | boolean>;
  before: Counts;
  after: Counts;
  /** What `during` threw: the case fails with it once the figures are recorded. */
  failure: unknown;
}

/** Load, fault, lift, recovery, judge. Never throws for the fault's own checks: see `failure`. */
export async function runCase(rig: Rig, c: ProxyCase, load: Load, watch: RssWatch, afterLiftMs: number): Promise<CaseResult> {
  await load.flowing();
  // Steady load upstream too: frames acked every reporting interval, so a timeout counts from the fault.
  await waitFor(
    'upstream acks to flow',
    async () => {
      const age = (await sidecarStatus(rig.sidecar.socket)).upstream?.lastAckAgeMs;
      return typeof age === 'number' && age <= 2 * RIG.metricIntervalMs;
    },
    15000,
  );
  const before = await counts(rig);
  const t0 = Date.now();
  let extra: Record<string, number | string | boolean> = {};
  let failure: unknown = null;
  c.apply(rig);
  try {
    extra = await c.during(rig, t0);
  } catch (err) {
    failure = err;
  }
  const lifted = Date.now();
  if (c.lift) c.lift(rig);
  else {
    rig.proxy.clear();
    rig.ipcProxy?.clear();
  }
  let recoverMs: number | null = null;
  try {
    recoverMs = (await (c.recovered ? c.recovered(rig, lifted, load) : serviceBack(rig.sidecar, lifted))) - lifted;
  } catch (err) {
    failure ??= err;
  }
  // Load goes on a while on the healed link, then stops and is judged.
  await sleep(afterLiftMs);
  const tally = await load.stop();
  const verdict = await settleAndJudge(rig, tally);
  const after = await counts(rig);
  return { verdict, recoverMs, maxRssMb: foldRss(watch), extra, before, after, failure };
}

/**
 * Resident set bounds, MiB. The sidecar's and the collector's queues are bounded by configuration
 * (net_send_queue1_size, an ack window of 4 × net_send_max_bytes), far above what these loads fill,
 * so their RSS is Node's baseline (~60 MiB measured) plus SQLite's cache; 200 MiB leaves room for
 * a loaded machine's garbage collector. The proxy runs in the test process: its queues are bounded
 * by its high-water mark (1 MiB per direction and connection).
 */
export const MEMORY_BOUND_MB: Record<string, number> = { sidecar: 200, collector: 250, app: 150, proxy: 300 };

const APPS = 2;
const TICK_MS = 10;
const LOAD = `${APPS} apps × ${1000 / TICK_MS} counter adds/s, a flush every 50 ms`;

/**
 * A describe() of proxy cases on one rig, run in order: each case records its figures, then
 * asserts lost 0, duplicated 0, the memory bounds, no drop by the sidecar, and its own causes.
 */
export function describeProxyCases(title: string, file: string, rigName: string, rigOpts: { ipc?: boolean }, cases: (ProxyCase & { title: string })[]): void {
  describe(title, () => {
    let rig: Rig;
    before(async () => {
      rig = await startRig(rigName, rigOpts);
    });
    after(async () => {
      await rig?.close();
    });
    for (const c of cases) {
      test(`${c.id}: ${c.title}`, async () => {
        const load = startLoad(rig, c.id, APPS, TICK_MS);
        const watch = new RssWatch(rssRoles(rig, load));
        const r = await runCase(rig, c, load, watch, 200);
        const errs = delta(r.before.sessionErrors, r.after.sessionErrors);
        const rejected = delta(r.before.rejected, r.after.rejected);
        const ipcErrors = delta(r.before.ipcErrors, r.after.ipcErrors);
        recordFigures(file, {
          case: c.id,
          section: 'proxy',
          load: LOAD,
          fault: c.fault,
          lost: r.verdict.lost,
          duplicated: r.verdict.duplicated,
          maxRssMb: r.maxRssMb,
          recoverMs: r.recoverMs,
          extra: {
            ...r.extra,
            sessions: r.after.sessions - r.before.sessions,
            ...(Object.keys(errs).length > 0 && { sessionErrors: JSON.stringify(errs) }),
            ...(Object.keys(rejected).length > 0 && { collectorRejected: JSON.stringify(rejected) }),
            ...(Object.keys(ipcErrors).length > 0 && { ipcErrors: JSON.stringify(ipcErrors) }),
            unacked: r.verdict.unacked,
          },
        });
        if (r.failure !== null) throw r.failure;
        assert.equal(r.verdict.lost, 0, `lost: ${JSON.stringify(r.verdict.perSeries)}`);
        assert.equal(r.verdict.duplicated, 0, `duplicated: ${JSON.stringify(r.verdict.perSeries)}`);
        for (const [role, mb] of Object.entries(r.maxRssMb)) {
          const bound = MEMORY_BOUND_MB[role];
          assert.ok(bound !== undefined && mb <= bound, `${role} RSS ${mb} MiB over its bound ${bound} MiB`);
        }
        assert.deepEqual(delta(r.before.dropped, r.after.dropped), {}, 'the sidecar dropped nothing');
        c.causes(r.before, r.after, rig);
      });
    }
  });
}
