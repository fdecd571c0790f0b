/**
 * The crash rig of the fault suite: one real collector, one real sidecar over TCP and a few
 * load apps (ledger.ts), each of which can be killed, stopped and restarted in place — the
 * collector on the same port and data directory, the sidecar on the same socket and data
 * directory, an app under the same name and series — while the rig keeps the ledger of every
 * app run that ended. drain() stops the load and judges the collector's sums against it.
 *
 *   apps ──unix socket──▶ sidecar ──tcp──▶ collector
 *   app i: series `<name>.a<i>.s<j>`, one app run after another; their tallies add up
 */
import { request } from 'node:http';
import { join } from 'node:path';
import { type CollectorProc, createKey, startCollector } from './collector';
import { RssWatch } from './figures';
import { type LoadApp, type Tally, type Verdict, addTallies, collectorSums, judge, startLoadApp, tallyOf } from './ledger';
import { requestStatus } from '@apm-sidecar/sidecar/dist/status-client';
import { type SidecarProc, sleep, startSidecar, tempDir, waitFor } from './procs';

export type Settings = Record<string, string | number>;

export interface RigOptions {
  /** Agent id, app names and series prefix: distinct per case. */
  name: string;
  apps: number;
  seriesPerApp?: number;
  /** Sidecar `--set` keys over CRASH_SIDECAR. */
  sidecar?: Settings;
  /** Load app environment (TICK_MS, FLUSH_EVERY, FLUSH_TIMEOUT_MS). */
  appEnv?: Settings;
  /**
   * Something between the sidecar and the collector (a Gate, a fault proxy): given the collector's
   * port once it is known, returns the port the sidecar dials. Default: the collector itself.
   */
  via?: (collectorPort: number) => Promise<number>;
}

/**
 * Sidecar settings for crash loops: fast flushes and intervals, a reconnect every 200 ms for ever,
 * never standby, and a retention far longer than any run, so nothing acked may expire.
 */
export const CRASH_SIDECAR: Settings = {
  flush_ms: 50,
  metric_interval_ms: 200,
  tcp_connection_timeout: 1000,
  reconnect_schedule: '200',
  standby_after_ms: 3_600_000,
  retention_ms: 3_600_000,
  shutdown_timeout_ms: 1000,
};

/** Collector settings: a minute stays open for an hour, so a late point is never dropped as late. */
export const CRASH_COLLECTOR = ['--set', 'rollup_grace_ms=3600000'];

export function sets(o: Settings): string[] {
  return Object.entries(o).flatMap(([k, v]) => ['--set', `${k}=${v}`]);
}

/** GET a JSON document with a deadline (a stopped collector never answers). */
export function getJsonWithin<T>(port: number, path: string, timeoutMs: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, timeout: timeoutMs }, (res) => {
      let body = '';
      res.on('data', (d) => {
        body += d;
      });
      res.on('end', () => {
        try {
          if (res.statusCode !== 200) throw new Error(`${path}: ${res.statusCode} ${body.slice(0, 200)}`);
          resolve(JSON.parse(body) as T);
        } catch (err) {
          reject(err);
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error(`${path}: no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

export class CrashRig {
  readonly tmp = tempDir('apm-crash-');
  readonly collectorData = join(this.tmp.dir, 'collector');
  readonly sidecarDir = join(this.tmp.dir, 'sc');
  readonly apps: (LoadApp | null)[];
  /** Tallies of the app runs that have ended (killed or stopped). */
  private readonly ended: Tally[] = [];
  private readonly runs: number[];
  collector!: CollectorProc;
  sidecar!: SidecarProc;
  key = '';
  private port = 0;
  private httpPort = 0;
  /** The port the sidecar dials: the collector's, or what `via` put in front of it. */
  private upstreamPort = 0;
  readonly rss: RssWatch;
  /** What the sidecar still held when drain() gave up waiting (for the failure message). */
  left = '';

  private constructor(readonly o: RigOptions) {
    this.apps = Array.from({ length: o.apps }, () => null);
    this.runs = Array.from({ length: o.apps }, () => 0);
    this.rss = new RssWatch(() => {
      const pids: Record<string, number | undefined> = { collector: this.collector?.pid, sidecar: this.sidecar?.pid };
      this.apps.forEach((a, i) => {
        pids[`app${i}`] = a?.pid;
      });
      return pids;
    });
  }

  /** Collector, sidecar (waiting until `active`) and every app started. */
  static async start(o: RigOptions): Promise<CrashRig> {
    const rig = new CrashRig(o);
    try {
      rig.key = await createKey(rig.collectorData, o.name);
      await rig.startCollector();
      rig.upstreamPort = o.via ? await o.via(rig.port) : rig.port;
      await rig.startSidecar();
      for (let i = 0; i < o.apps; i++) rig.startApp(i);
      await rig.waitSidecar((s) => s === 'active', 20000);
    } catch (err) {
      await rig.close();
      throw err;
    }
    return rig;
  }

  seriesOf(i: number): string[] {
    return Array.from({ length: this.o.seriesPerApp ?? 2 }, (_, j) => `${this.o.name}.a${i}.s${j}`);
  }

  allSeries(): string[] {
    return this.apps.flatMap((_, i) => this.seriesOf(i));
  }

  /** The roles RssWatch reports, with their max RSS rounded per role kind (sidecar, collector, app). */
  maxRss(): Record<string, number> {
    const m = this.rss.stop();
    const out: Record<string, number> = {};
    for (const [role, v] of Object.entries(m)) {
      const kind = role.startsWith('app') ? 'app' : role;
      out[kind] = Math.max(out[kind] ?? 0, v);
    }
    return out;
  }

  /** Start (or restart) the collector on the same port, HTTP port and data directory. */
  async startCollector(): Promise<void> {
    const fixed = this.port === 0 ? [] : ['--port', String(this.port), '--http', `127.0.0.1:${this.httpPort}`];
    this.collector = await startCollector(this.collectorData, [...CRASH_COLLECTOR, ...fixed]);
    this.port = this.collector.port;
    this.httpPort = this.collector.httpPort;
  }

  /** Start (or restart) the sidecar on the same socket and data directory; resolves once it listens. */
  async startSidecar(): Promise<void> {
    const settings = { ...CRASH_SIDECAR, agent_id: this.o.name, ...this.o.sidecar };
    this.sidecar = await startSidecar(
      this.sidecarDir,
      ['--transport', 'tcp', '--server-host', '127.0.0.1', '--server-port', String(this.upstreamPort), ...sets(settings)],
      { APM_SIDECAR_ACCESS_KEY: this.key },
    );
  }

  startApp(i: number): LoadApp {
    if (this.apps[i]) throw new Error(`app${i} is running`);
    this.runs[i] = (this.runs[i] as number) + 1;
    const a = startLoadApp(this.sidecar.socket, `${this.o.name}-app${i}`, this.seriesOf(i), { TICK_MS: 20, FLUSH_EVERY: 5, ...this.o.appEnv });
    this.apps[i] = a;
    return a;
  }

  /** End app i's run with `signal` (SIGKILL: at once; SIGTERM: it flushes and exits) and keep its tally. */
  async endApp(i: number, signal: NodeJS.Signals = 'SIGKILL'): Promise<Tally> {
    const a = this.apps[i];
    if (!a) throw new Error(`app${i} is not running`);
    if (signal === 'SIGTERM') a.child.kill('SIGCONT');
    await a.kill(signal);
    this.apps[i] = null;
    const t = tallyOf(a);
    this.ended.push(t);
    return t;
  }

  appRuns(i: number): number {
    return this.runs[i] as number;
  }

  /** The sidecar's state, or null when it does not answer within `timeoutMs`. */
  async sidecarState(timeoutMs = 1000): Promise<string | null> {
    try {
      return String((await requestStatus(this.sidecar.socket, timeoutMs)).state);
    } catch {
      return null;
    }
  }

  waitSidecar(ok: (state: string) => boolean, timeoutMs = 30000): Promise<string> {
    return waitFor(
      'the sidecar state',
      async () => {
        const s = await this.sidecarState();
        return s !== null && ok(s) ? s : null;
      },
      timeoutMs,
    );
  }

  /** Metric points the running collector has stored since it started; null when it does not answer. */
  async receivedPoints(timeoutMs = 1000): Promise<number | null> {
    try {
      const s = await getJsonWithin<{ received: { metricPoints: number } }>(this.httpPort, '/api/stats', timeoutMs);
      return s.received.metricPoints;
    } catch {
      return null;
    }
  }

  /**
   * From `t0`: the time until the sidecar is `active` and until the collector stores points past
   * `before` (null: take the first answer after t0 as the base).
   */
  async recovery(t0: number, before: number | null, timeoutMs = 30000): Promise<{ activeMs: number; receivingMs: number }> {
    const active = this.waitSidecar((s) => s === 'active', timeoutMs).then(() => Date.now() - t0);
    let base = before;
    const receiving = waitFor(
      'the collector to receive points again',
      async () => {
        const n = await this.receivedPoints();
        if (n === null) return false;
        if (base === null) {
          base = n;
          return false;
        }
        return n > base;
      },
      timeoutMs,
    ).then(() => Date.now() - t0);
    const [activeMs, receivingMs] = await Promise.all([active, receiving]);
    return { activeMs, receivingMs };
  }

  /** Every tally so far: the ended runs and what the running apps have printed. */
  tally(): Tally {
    return addTallies(...this.ended, ...this.apps.filter((a): a is LoadApp => a !== null).map(tallyOf));
  }

  /**
   * Stop the load (SIGTERM: each app flushes and exits), wait until the sidecar has sent and had
   * acked everything and the collector holds at least every acked value, then `settleMs` more (three
   * metric intervals) so a late duplicate would show, and judge.
   */
  async drain(settleMs = 600, timeoutMs = 30000): Promise<Verdict & { tally: Tally; drained: boolean }> {
    for (let i = 0; i < this.apps.length; i++) if (this.apps[i]) await this.endApp(i, 'SIGTERM');
    const tally = addTallies(...this.ended);
    const names = this.allSeries();
    // Both waits end in a verdict either way: what never arrives is counted lost by judge().
    let drained = true;
    try {
      await waitFor(
        'the sidecar to have sent everything',
        async () => {
          const s = await requestStatus(this.sidecar.socket, 3000);
          const r = s as {
            retention: { rows: number };
            upstream: { inFlightFrames: number };
            queues: { queue1: { depth: number } };
            aggregation: { openIntervals: number };
          };
          return r.retention.rows === 0 && r.upstream.inFlightFrames === 0 && r.queues.queue1.depth === 0 && r.aggregation.openIntervals === 0;
        },
        timeoutMs,
        100,
      );
      await waitFor(
        'the collector to hold every acked value',
        async () => {
          const sums = await collectorSums(this.collector, names);
          return names.every((n) => (sums[n] ?? 0) >= (tally.acked[n] ?? 0));
        },
        timeoutMs,
        100,
      );
    } catch {
      drained = false;
      try {
        const s = (await requestStatus(this.sidecar.socket, 3000)) as Record<string, unknown>;
        this.left = JSON.stringify({ retention: s.retention, upstream: s.upstream, queues: s.queues, aggregation: s.aggregation });
      } catch (err) {
        this.left = `no status: ${String(err)}`;
      }
    }
    await sleep(settleMs);
    const v = judge(tally, await collectorSums(this.collector, names));
    return { ...v, tally, drained };
  }

  async close(): Promise<void> {
    this.rss.stop();
    for (const a of this.apps) {
      a?.child.kill('SIGCONT');
      await a?.kill('SIGKILL');
    }
    for (const p of [this.sidecar, this.collector]) {
      if (!p) continue;
      p.child.kill('SIGCONT');
      await p.kill('SIGKILL');
    }
    this.tmp.cleanup();
  }
}
