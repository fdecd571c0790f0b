/**
 * Exact accounting for the fault suite. Apps (helpers/apps/load-app.ts) print what they
 * recorded and what the sidecar acknowledged; the collector's sums per series must satisfy
 *   acked ≤ collector ≤ recorded
 * A shortfall below `acked` is a lost acknowledged value; anything above `recorded` was
 * counted twice. Values recorded but never acknowledged (an app killed mid-flush) may or may
 * not arrive: both are correct.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { type CollectorProc, getJson } from './collector';
import { FIXTURES, Proc } from './procs';

export interface Tally {
  acked: Record<string, number>;
  recorded: Record<string, number>;
}

export const emptyTally = (): Tally => ({ acked: {}, recorded: {} });

/** The bounds one app run printed (its last `acked` and last `recorded` lines). */
export function tallyOf(p: Proc): Tally {
  const t = emptyTally();
  for (const l of p.lines) {
    if (l.acked && typeof l.acked === 'object') t.acked = { ...(l.acked as Record<string, number>) };
    if (l.recorded && typeof l.recorded === 'object') t.recorded = { ...(l.recorded as Record<string, number>) };
  }
  return t;
}

/** Several runs' bounds added up (app restarts, several apps on one series). */
export function addTallies(...ts: Tally[]): Tally {
  const sum = emptyTally();
  for (const t of ts) {
    for (const [k, v] of Object.entries(t.acked)) sum.acked[k] = (sum.acked[k] ?? 0) + v;
    for (const [k, v] of Object.entries(t.recorded)) sum.recorded[k] = (sum.recorded[k] ?? 0) + v;
  }
  return sum;
}

export interface LoadApp extends Proc {
  series: string[];
}

/** Start the load app on `socket` with counters `series`; RUN_MS 0 runs until SIGTERM. */
export function startLoadApp(socket: string, app: string, series: string[], env: Record<string, string | number> = {}): LoadApp {
  const child = spawn(process.execPath, [join(FIXTURES, 'load-app.js')], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, SOCKET: socket, APP: app, SERIES: series.join(','), ...Object.fromEntries(Object.entries(env).map(([k, v]) => [k, String(v)])) },
  });
  const p = new Proc(child) as LoadApp;
  p.series = series;
  return p;
}

/** The collector's sum of each counter in `names`, through the JSON API. */
export async function collectorSums(c: CollectorProc, names: string[]): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const name of names) {
    const r = await getJson<{ sum: number }[]>(c.httpPort, `/api/metrics?name=${encodeURIComponent(name)}&limit=10000`, c.httpHost);
    if (r.status !== 200) throw new Error(`/api/metrics ${r.status}: ${JSON.stringify(r.body)}`);
    // The API's largest page: a full page could hide points, so a sum from it would be wrong.
    if (r.body.length >= 10000) throw new Error(`${name} has 10,000 points or more: keep fault runs below one API page per series`);
    out[name] = r.body.reduce((a, p) => a + p.sum, 0);
  }
  return out;
}

export interface Verdict {
  lost: number;
  duplicated: number;
  /** Recorded but not acknowledged, and not at the collector (allowed). */
  unacked: number;
  perSeries: Record<string, { acked: number; recorded: number; collector: number }>;
}

export function judge(t: Tally, atCollector: Record<string, number>): Verdict {
  const v: Verdict = { lost: 0, duplicated: 0, unacked: 0, perSeries: {} };
  for (const name of new Set([...Object.keys(t.recorded), ...Object.keys(t.acked)])) {
    const acked = t.acked[name] ?? 0;
    const recorded = t.recorded[name] ?? 0;
    const collector = atCollector[name] ?? 0;
    v.perSeries[name] = { acked, recorded, collector };
    if (collector < acked) v.lost += acked - collector;
    if (collector > recorded) v.duplicated += collector - recorded;
    if (collector < recorded) v.unacked += Math.max(0, recorded - Math.max(collector, acked));
  }
  return v;
}
