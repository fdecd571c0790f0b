import { type ApmError, type Series, decodeMetrics } from '@apm-sidecar/proto';
import { decodeMetricPack } from '@apm-sidecar/proto/upstream';
import type { Aggregator } from './aggregator';
import type { SeqTracker } from './dedup';
import { DOGSTATSD_INSTANCE } from './dogstatsd-input';
import type { InstanceBindings } from './instance-binding';
import type { Logger } from './logger';
import type { Queue1 } from './queue1';
import type { RetentionStore, Synchronous } from './retention/store';

/** Where what the retention held goes back to after a restart. */
export interface RecoveryTargets {
  seqs: SeqTracker;
  bindings: InstanceBindings;
  aggregator: Aggregator;
  seriesCache: Map<string, Series>;
  queue1: Queue1;
  /** Registrations already persisted (de-duplication by name). */
  knownBt: Set<string>;
  synchronous: Synchronous;
  log: Logger;
}

/**
 * Load what a previous run left in the retention: de-duplication state and instance bindings,
 * the frames of open intervals (aggregated again), unsent packs and registrations (queued again).
 * An unreadable row is skipped and logged; the rest is still recovered.
 */
export function recover(store: RetentionStore, t: RecoveryTargets): void {
  for (const { instanceId, seq } of store.loadSeqs()) if (t.seqs.isNew(instanceId, seq)) t.seqs.commit(instanceId, seq);
  for (const { instanceId, secretHash } of store.loadInstances()) if (instanceId !== DOGSTATSD_INSTANCE) t.bindings.bind(instanceId, secretHash);
  const frames = store.loadFrames();
  for (const f of frames) {
    try {
      t.aggregator.add(decodeMetrics(f.payload, t.seriesCache), { instanceId: f.instanceId, seq: f.seq });
    } catch (err) {
      t.log.warn({ instanceId: f.instanceId, seq: f.seq, code: (err as ApmError).code }, 'skipping an unreadable retained frame');
    }
  }
  const packs = store.loadPacks();
  let points = 0;
  for (const p of packs) {
    try {
      // Decoded once to check it (a pack the collector cannot read would be resent forever), then kept encoded.
      const n = decodeMetricPack(p.body, t.seriesCache).points.length;
      points += n;
      t.queue1.push({ kind: 'metrics', packId: p.packId, intervalStart: p.intervalStart, intervalMs: p.intervalMs, points: n, body: p.body });
    } catch (err) {
      t.log.warn({ packId: p.packId, code: (err as ApmError).code }, 'skipping an unreadable retained pack');
      store.packAcked(p.packId);
    }
  }
  const bts = store.loadBt();
  for (const b of bts) t.queue1.push({ kind: 'btRegistration', origin: { app: b.app, instanceId: b.instanceId, pid: b.pid }, name: b.name, ts: b.ts });
  for (const name of store.knownBt()) t.knownBt.add(name);
  t.log.info(
    { path: store.path, synchronous: t.synchronous, frames: frames.length, packs: packs.length, points, btRegistrations: bts.length },
    'retention opened',
  );
}
