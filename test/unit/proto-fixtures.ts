// Shared fixtures for the proto unit tests: a seeded PRNG, one sample frame of
// every message type, a decoder for any type, and a plain-data view of decoded
// metrics (sketches hold typed arrays whose size and offset are not part of
// their value, so they are compared through their buckets).
import {
  MessageType,
  PROTOCOL_VERSION,
  type MetricKindCode,
  type MetricPoint,
  type MetricsMessage,
  Sketch,
  type BucketStore,
  type Tags,
  decodeAck,
  decodeControl,
  decodeControlResult,
  decodeError,
  decodeShimMessage,
  decodeStateChange,
  decodeStatusResponse,
  decodeWelcome,
  encodeAck,
  encodeActiveStack,
  encodeBtRegistration,
  encodeControl,
  encodeControlResult,
  encodeError,
  encodeEvent,
  encodeHeartbeat,
  encodeHello,
  encodeMetrics,
  encodeSeries,
  encodeSnapshot,
  encodeStateChange,
  encodeStatusRequest,
  encodeStatusResponse,
  encodeTrace,
  encodeWelcome,
  seriesKey,
} from '@apm-sidecar/proto';

/** mulberry32: a small seeded PRNG returning floats in [0, 1). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A sketch holding `values`. */
export function sketchOf(values: readonly number[]): Sketch {
  const s = new Sketch();
  for (const v of values) s.add(v);
  return s;
}

/** Non-empty buckets of a store as [key, count] pairs, lowest key first. */
export function bucketsOf(store: BucketStore): [number, number][] {
  const out: [number, number][] = [];
  if (store.empty) return out;
  for (let k = store.lo; k <= store.hi; k++) {
    const c = store.get(k);
    if (c !== 0) out.push([k + 0, c]); // + 0: a key computed as -0 is bucket 0
  }
  return out;
}

export interface SketchView {
  count: number;
  sum: number;
  min: number;
  max: number;
  zero: number;
  pos: [number, number][];
  neg: [number, number][];
}

export function sketchView(s: Sketch): SketchView {
  return { count: s.count, sum: s.sum, min: s.min, max: s.max, zero: s.zero, pos: bucketsOf(s.pos), neg: bucketsOf(s.neg) };
}

export function metricsView(m: MetricsMessage): unknown {
  return {
    seq: m.seq,
    ts: m.ts,
    windowMs: m.windowMs,
    points: m.points.map((p) => ({ ...p, sketch: p.sketch === null ? null : sketchView(p.sketch) })),
  };
}

/** A point as the decoder returns it; `key` is filled in from the encoded series. */
export function point(
  kind: MetricKindCode,
  name: string,
  tags: Tags,
  stats: { count: number; sum: number; min: number; max: number; last?: number; sketch?: Sketch },
): MetricPoint {
  return {
    series: { key: seriesKey(encodeSeries(kind, name, tags)), kind, name, tags },
    count: stats.count,
    sum: stats.sum,
    min: stats.min,
    max: stats.max,
    last: stats.last ?? Number.NaN,
    sketch: stats.sketch ?? null,
  };
}

export function histogramPoint(name: string, tags: Tags, values: readonly number[]): MetricPoint {
  const s = sketchOf(values);
  return point(2, name, tags, { count: s.count, sum: s.sum, min: s.min, max: s.max, sketch: s });
}

/** Decode a payload of any type into plain data (metrics through metricsView). */
export function decodeAny(type: number, payload: Buffer): unknown {
  switch (type) {
    case MessageType.Welcome:
      return decodeWelcome(payload);
    case MessageType.StateChange:
      return decodeStateChange(payload);
    case MessageType.Ack:
      return decodeAck(payload);
    case MessageType.Error:
      return decodeError(payload);
    case MessageType.StatusRequest:
    case MessageType.StatusResponse:
      return decodeStatusResponse(payload);
    case MessageType.Control:
      return decodeControl(payload);
    case MessageType.ControlResult:
      return decodeControlResult(payload);
    default: {
      const m = decodeShimMessage(type, payload);
      return { type: m.type, body: m.type === 'Metrics' ? metricsView(m.body) : m.body };
    }
  }
}

export interface Sample {
  type: number;
  frame: Buffer;
  /** What decodeAny returns for this frame. */
  expected: unknown;
}

function sample(frame: Buffer, expected: unknown): Sample {
  return { type: frame[4] as number, frame, expected };
}

function metricsSample(m: MetricsMessage): Sample {
  return sample(encodeMetrics(m), { type: 'Metrics', body: metricsView(m) });
}

/**
 * Several frames of every message type, including a metrics frame with all
 * three point kinds, unicode text, an empty-tag series and sketches with
 * negative, zero and positive values.
 */
export function sampleFrames(): Sample[] {
  const rnd = prng(7);
  const latencies = Array.from({ length: 200 }, () => Math.exp(rnd() * 8));
  const out: Sample[] = [];

  const hello = {
    v: PROTOCOL_VERSION,
    app: 'checkout',
    pid: 4242,
    shimVersion: '0.1.0',
    instanceId: 'i-0001',
    secret: '0123456789abcdef'.repeat(4),
    seq: 17,
    host: 'web-1',
    runtime: 'node 20',
  };
  out.push(sample(encodeHello(hello), { type: 'Hello', body: hello }));
  const hello2 = { v: PROTOCOL_VERSION, app: 'カート', pid: 0, shimVersion: '0.1.0', instanceId: 'i-0002', secret: 'ß'.repeat(32), seq: 0 };
  out.push(sample(encodeHello(hello2), { type: 'Hello', body: hello2 }));

  const welcome = { state: 'active' as const, settings: { flushMs: 1000, maxFrameBytes: 1048576 }, ackedSeq: 17, agentId: 'agent-9', sidecarVersion: '0.1.0' };
  out.push(sample(encodeWelcome(welcome), welcome));

  const m1: MetricsMessage = {
    seq: 1,
    ts: 1_700_000_000_000,
    windowMs: 10_000,
    points: [
      point(0, 'http.requests', { method: 'GET', route: '/cart' }, { count: 12, sum: 12, min: 1, max: 1 }),
      point(1, 'heap.used', {}, { count: 3, sum: 3.5e8, min: 1e8, max: 1.5e8, last: 1.25e8 }),
      histogramPoint('http.latency', { route: '/cart', ünï: 'çødé ✓' }, latencies),
      histogramPoint('temp.delta', { zone: 'a' }, [-3.5, -0.25, 0, 0, 1e-12, 2, 40, 40, 1e6]),
    ],
  };
  out.push(metricsSample(m1));
  const m2: MetricsMessage = {
    seq: 2,
    ts: 1_700_000_010_000,
    windowMs: 10_000,
    points: [point(0, 'http.requests', { method: 'GET', route: '/cart' }, { count: 0, sum: 0, min: 0, max: 0 }), histogramPoint('empty.hist', {}, [])],
  };
  out.push(metricsSample(m2));
  out.push(metricsSample({ seq: 2 ** 48 - 1, ts: 0, windowMs: 0, points: [] }));

  const trace = {
    txid: 'tx-1',
    traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
    spanId: '00f067aa0ba902b7',
    parentSpanId: 'a3ce929d0e0e4736',
    name: 'GET /cart',
    startTime: 1_700_000_000_123,
    durationMs: 35.5,
    error: 'TypeError: x is undefined',
    steps: [
      { type: 'sql', text: 'SELECT * FROM cart WHERE id = ?', durationMs: 12.25, offsetMs: 3 },
      { type: 'http', text: 'GET http://inventory/items', durationMs: 20, offsetMs: 15.5 },
    ],
  };
  out.push(sample(encodeTrace(trace), { type: 'Trace', body: trace }));
  const trace2 = { txid: 'tx-2', traceId: 't', spanId: 's', name: 'job', startTime: 0, durationMs: 0, steps: [] };
  out.push(sample(encodeTrace(trace2), { type: 'Trace', body: trace2 }));

  const stack = { txid: 'tx-3', name: 'GET /slow', ts: 1_700_000_000_500, elapsedMs: 5012, frames: ['at a (a.js:1:1)', 'at b (b.js:2:2)'] };
  out.push(sample(encodeActiveStack(stack), { type: 'ActiveStack', body: stack }));

  const event = { ts: 1_700_000_000_600, type: 'deploy', message: 'v2 rolled out', attributes: { version: 'v2', canary: true, replicas: 3 } };
  out.push(sample(encodeEvent(event), { type: 'Event', body: event }));
  const event2 = { ts: 1, type: 'gc', message: '' };
  out.push(sample(encodeEvent(event2), { type: 'Event', body: event2 }));

  const snapshot = { ts: 1_700_000_000_700, kind: 'env', data: { node: '20', argv: ['a', 'b'], nested: { n: null, x: 1.5 } } };
  out.push(sample(encodeSnapshot(snapshot), { type: 'Snapshot', body: snapshot }));

  const bt = { seq: 3, name: 'Checkout', ts: 1_700_000_000_800 };
  out.push(sample(encodeBtRegistration(bt), { type: 'BtRegistration', body: bt }));

  out.push(sample(encodeHeartbeat(1_700_000_000_900.5), { type: 'Heartbeat', body: 1_700_000_000_900.5 }));
  out.push(sample(encodeHeartbeat(0), { type: 'Heartbeat', body: 0 }));

  const sc = { state: 'standby' as const, cause: 'collector unreachable for 60s' };
  out.push(sample(encodeStateChange(sc), sc));
  out.push(sample(encodeAck(3), 3));
  out.push(sample(encodeAck(0), 0));
  const err = { code: 'ERR_MALFORMED_MESSAGE', message: 'malformed message: truncated u48' };
  out.push(sample(encodeError(err), err));
  out.push(sample(encodeStatusRequest(), {}));
  const status = { state: 'active', shims: 2, queue1: { frames: 10 }, uptimeMs: 1234 };
  out.push(sample(encodeStatusResponse(status), status));
  out.push(sample(encodeControl({ command: 'flush' }), { command: 'flush' }));
  out.push(sample(encodeControlResult({ ok: false, message: 'unknown command' }), { ok: false, message: 'unknown command' }));
  out.push(metricsSample({ seq: 4, ts: 5, windowMs: 1, points: [point(1, 'g', { k: 'v' }, { count: 1, sum: -2, min: -2, max: -2, last: -2 })] }));
  return out;
}
