/**
 * Crashes during a collector outage (issue 10, item 2): a SIGTERM of the sidecar while the
 * collector is down keeps everything retained, and the first part of a long outage (still
 * within retention_ms) is delivered, not only the last. Real collector, sidecar and load apps;
 * durations scaled down (an outage of "minutes" is seconds here).
 */
import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { rssWithinBounds } from '../helpers/crash-loop';
import { CrashRig, getJsonWithin } from '../helpers/crash-rig';
import { byLevel, recordFigures } from '../helpers/figures';
import { sidecarStatus } from '../helpers/outage';
import { sleep, waitFor } from '../helpers/procs';

const FILE = 'faults/crash-outage';
let rig: CrashRig | undefined;
afterEach(async () => {
  await rig?.close();
  rig = undefined;
});

type Json = Record<string, any>;

async function receiving(r: CrashRig): Promise<void> {
  await waitFor('the collector to receive points', async () => ((await r.receivedPoints()) ?? 0) > 0, 30000);
}

test('SIGTERM of the sidecar while the collector is down keeps everything retained: after restarts of both, every acked value arrives exactly once', async () => {
  const rounds = byLevel(1, 3, 6);
  const r = await CrashRig.start({ name: 'sigterm-outage', apps: 2 });
  rig = r;
  await receiving(r);
  const exits: number[] = [];
  const kept: number[] = [];
  const recovered: number[] = [];
  const sidecars: (typeof r.sidecar)[] = [];
  for (let i = 0; i < rounds; i++) {
    await r.collector.kill('SIGKILL');
    await r.waitSidecar((s) => s !== 'active');
    await sleep(byLevel(600, 1500, 3000));
    const before = (await sidecarStatus(r.sidecar.socket)) as Json;
    const t = Date.now();
    await r.sidecar.kill('SIGTERM');
    exits.push(Date.now() - t);
    assert.equal(r.sidecar.exitCode, 0, `SIGTERM exits 0 (${r.sidecar.stderr})`);
    // The apps go on recording while no sidecar runs: their shims keep it.
    await sleep(300);
    sidecars.push(r.sidecar);
    await r.startSidecar();
    const opened = r.sidecar.logs('retention opened')[0] as Json;
    kept.push((opened.packs as number) + (opened.frames as number));
    assert.ok((opened.packs as number) + (opened.frames as number) >= 1, `the retention was reloaded (${JSON.stringify(opened)})`);
    assert.ok(
      (opened.packs as number) >= before.retention.packs,
      `every retained pack is still there (${opened.packs} after, ${before.retention.packs} before the SIGTERM)`,
    );
    await sleep(byLevel(300, 1000, 2000));
    const t0 = Date.now();
    await r.startCollector();
    const rec = await r.recovery(t0, 0);
    recovered.push(rec.receivingMs);
  }
  const v = await r.drain();
  const rss = r.maxRss();
  recordFigures(FILE, {
    case: 'crash/sigterm-sidecar-during-outage',
    section: 'crash',
    load: '2 apps × 2 series × 50 adds/s',
    fault: 'collector kill -9; the sidecar SIGTERMed during the outage and restarted; then the collector restarted',
    lost: v.lost,
    duplicated: v.duplicated,
    maxRssMb: rss,
    recoverMs: Math.max(...recovered),
    extra: { rounds, sigtermExitMaxMs: Math.max(...exits), retainedRowsMin: Math.min(...kept), unacked: v.unacked, drained: v.drained },
  });
  if (v.lost > 0) for (const sc of [...sidecars, r.sidecar]) console.log(sc.raw.filter((l) => !l.includes('"level":30')).join('\n'));
  assert.equal(v.lost, 0, `${JSON.stringify(v.perSeries)} ${r.left}`);
  assert.equal(v.duplicated, 0, JSON.stringify(v.perSeries));
  rssWithinBounds(rss);
});

test('the first part of a long outage (still within retention_ms) is delivered, not only the last', async () => {
  // 8 s of retention, a 4 s outage, 200 ms intervals: about 20 closed intervals wait for the
  // collector, more than queue1's 8 packs, as 18 intervals of 30 packs each would exceed the
  // default 512 at the default retention_ms and metric_interval_ms.
  const retentionMs = 8000;
  const outageMs = 4000;
  const r = await CrashRig.start({ name: 'first-minutes', apps: 2, sidecar: { retention_ms: retentionMs, net_send_queue1_size: 8 } });
  rig = r;
  await receiving(r);
  await r.collector.kill('SIGKILL');
  const cutAt = Date.now();
  await sleep(outageMs);
  const t0 = Date.now();
  await r.startCollector();
  const rec = await r.recovery(t0, 0);
  const v = await r.drain();
  const s = (await sidecarStatus(r.sidecar.socket)) as Json;
  const dropped = s.counters.dropped as Record<string, number>;
  // The earliest point of the outage at the collector, by timestamp, per series.
  let earliest = 0;
  for (const name of r.allSeries()) {
    const pts = await getJsonWithin<{ ts: number }[]>(r.collector.httpPort, `/api/metrics?name=${encodeURIComponent(name)}&from=${cutAt}&limit=10000`, 5000);
    const first = Math.min(...pts.map((p) => p.ts).filter((ts) => ts >= cutAt - 200));
    earliest = Math.max(earliest, first - cutAt);
  }
  const rss = r.maxRss();
  recordFigures(FILE, {
    case: 'crash/first-minutes-of-outage',
    section: 'crash',
    load: '2 apps × 2 series × 50 adds/s',
    fault: `collector down ${outageMs} ms with retention_ms ${retentionMs}, metric_interval_ms 200, net_send_queue1_size 8`,
    lost: v.lost,
    duplicated: v.duplicated,
    maxRssMb: rss,
    recoverMs: rec.receivingMs,
    extra: { earliestPointAfterCutMs: earliest, expired: dropped.expired ?? 0, queue1Full: dropped.queue1_full ?? 0, unacked: v.unacked, drained: v.drained },
  });
  assert.equal(dropped.expired ?? 0, 0, 'nothing reached retention_ms (else the machine was too slow for this scale)');
  assert.equal(v.lost, 0, JSON.stringify(v.perSeries));
  assert.equal(v.duplicated, 0, JSON.stringify(v.perSeries));
  rssWithinBounds(rss);
  assert.ok(earliest <= 1000, `the outage's first second is at the collector (earliest point ${earliest} ms after the cut)`);
});
