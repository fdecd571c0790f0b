import { Reader, Writer } from './buffer';
import { MalformedMessageError, ProtocolVersionError, UnknownMessageTypeError } from './errors';
import { Sketch } from './sketch';

/** IPC protocol version carried in Hello. */
export const PROTOCOL_VERSION = 1;

/**
 * Message types (the frame's type byte).
 *
 *   shim → sidecar : Hello, Metrics*, Trace, ActiveStack, Event, Snapshot, BtRegistration*, Heartbeat
 *   sidecar → shim : Welcome, StateChange, Ack, Error
 *   cli  → sidecar : StatusRequest, Control          sidecar → cli : StatusResponse, ControlResult
 *
 * (*) durable: carries a per-shim sequence number; acked once committed.
 */
export const MessageType = {
  Hello: 1,
  Welcome: 2,
  Metrics: 3,
  Trace: 4,
  ActiveStack: 5,
  Event: 6,
  Snapshot: 7,
  BtRegistration: 8,
  Heartbeat: 9,
  StateChange: 10,
  Ack: 11,
  StatusRequest: 12,
  StatusResponse: 13,
  Control: 14,
  ControlResult: 15,
  Error: 16,
} as const;
export type MessageTypeName = keyof typeof MessageType;
export type MessageTypeCode = (typeof MessageType)[MessageTypeName];

const TYPE_NAMES: (MessageTypeName | undefined)[] = [];
for (const [name, code] of Object.entries(MessageType)) TYPE_NAMES[code] = name as MessageTypeName;

export function messageTypeName(type: number): MessageTypeName {
  const n = TYPE_NAMES[type];
  if (n === undefined) throw new UnknownMessageTypeError(type);
  return n;
}

/** States the sidecar reports (DESIGN §6). */
export const SIDECAR_STATES = ['connecting', 'active', 'reconnecting', 'standby', 'muted', 'stopped'] as const;
export type SidecarState = (typeof SIDECAR_STATES)[number];

export function isSidecarState(s: unknown): s is SidecarState {
  return typeof s === 'string' && (SIDECAR_STATES as readonly string[]).includes(s);
}

// ---------------------------------------------------------------------------
// Limits a decoder enforces, so a hostile peer cannot make the receiver keep
// huge strings or maps. The shim enforces the same ones when recording.

export const LIMITS = {
  nameBytes: 256,
  tagCount: 32,
  tagBytes: 256,
  pointsPerFrame: 100_000,
  /** Nesting of free-form JSON (snapshot data): re-serializing a much deeper value overflows the stack. */
  jsonDepth: 256,
} as const;

// ---------------------------------------------------------------------------
// JSON-bodied messages. Small control messages and text-heavy packs are JSON:
// they are rare or dominated by their text. Metrics are binary (the hot path).

export interface Hello {
  v: number;
  app: string;
  pid: number;
  shimVersion: string;
  instanceId: string;
  host?: string;
  runtime?: string;
}

export interface ShimSettings {
  flushMs: number;
  maxFrameBytes: number;
  /** Bytes a shim may hold while the sidecar is away (shim_buffer_bytes); absent from older sidecars. */
  bufferBytes?: number;
}

export interface Welcome {
  state: SidecarState;
  settings: ShimSettings;
  /** Highest durable seq of this instance the sidecar has committed (0 if none). */
  ackedSeq: number;
  agentId: string;
  sidecarVersion: string;
}

export interface StateChange {
  state: SidecarState;
  cause: string;
}

export interface TraceStep {
  type: string;
  text: string;
  durationMs: number;
  /** Start of the step relative to the transaction start. */
  offsetMs: number;
}

/** A finished transaction (WhaTap's ProfilePack). */
export interface ProfilePack {
  txid: string;
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  startTime: number;
  durationMs: number;
  error?: string;
  steps: TraceStep[];
}

/** The stack of a transaction still running (WhaTap's ActiveStackPack). */
export interface ActiveStackPack {
  txid: string;
  name: string;
  ts: number;
  elapsedMs: number;
  frames: string[];
}

export interface EventPack {
  ts: number;
  type: string;
  message: string;
  attributes?: Record<string, string | number | boolean>;
}

export interface SnapshotPack {
  ts: number;
  kind: string;
  data: unknown;
}

export interface BtRegistration {
  seq: number;
  name: string;
  ts: number;
}

export interface ErrorMessage {
  code: string;
  message: string;
}

export interface ControlMessage {
  command: string;
}

export interface ControlResult {
  ok: boolean;
  message: string;
}

// ---------------------------------------------------------------------------
// Small validators: decoders return typed values or throw MalformedMessageError.

export type Obj = Record<string, unknown>;

export function parseJson(payload: Buffer, what: string): Obj {
  let v: unknown;
  try {
    v = JSON.parse(payload.toString('utf8'));
  } catch {
    throw new MalformedMessageError(`${what}: body is not JSON`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new MalformedMessageError(`${what}: body is not an object`);
  return v as Obj;
}

function str(o: Obj, k: string, what: string, max = 64 * 1024): string {
  const v = o[k];
  if (typeof v !== 'string') throw new MalformedMessageError(`${what}.${k} must be a string`);
  if (v.length > max) throw new MalformedMessageError(`${what}.${k} longer than ${max}`);
  return v;
}

function optStr(o: Obj, k: string, what: string): string | undefined {
  return o[k] === undefined ? undefined : str(o, k, what);
}

function num(o: Obj, k: string, what: string): number {
  const v = o[k];
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new MalformedMessageError(`${what}.${k} must be a finite number`);
  return v;
}

function nonNegInt(o: Obj, k: string, what: string): number {
  const v = num(o, k, what);
  if (!Number.isSafeInteger(v) || v < 0) throw new MalformedMessageError(`${what}.${k} must be a non-negative integer`);
  return v;
}

function json(type: number, body: unknown): Buffer {
  const s = JSON.stringify(body);
  const n = Buffer.byteLength(s);
  const out = Buffer.allocUnsafe(5 + n);
  out.writeUInt32LE(n + 1, 0);
  out[4] = type;
  out.write(s, 5, n, 'utf8');
  return out;
}

export function encodeHello(m: Hello): Buffer {
  return json(MessageType.Hello, m);
}

export function decodeHello(p: Buffer): Hello {
  const o = parseJson(p, 'hello');
  const v = nonNegInt(o, 'v', 'hello');
  if (v !== PROTOCOL_VERSION) throw new ProtocolVersionError(v, PROTOCOL_VERSION);
  const instanceId = str(o, 'instanceId', 'hello', 128);
  if (instanceId.length === 0) throw new MalformedMessageError('hello.instanceId is empty');
  const m: Hello = {
    v,
    app: str(o, 'app', 'hello', 256),
    pid: nonNegInt(o, 'pid', 'hello'),
    shimVersion: str(o, 'shimVersion', 'hello', 64),
    instanceId,
  };
  const host = optStr(o, 'host', 'hello');
  if (host !== undefined) m.host = host;
  const runtime = optStr(o, 'runtime', 'hello');
  if (runtime !== undefined) m.runtime = runtime;
  return m;
}

export function encodeWelcome(m: Welcome): Buffer {
  return json(MessageType.Welcome, m);
}

export function decodeWelcome(p: Buffer): Welcome {
  const o = parseJson(p, 'welcome');
  const state = o.state;
  if (!isSidecarState(state)) throw new MalformedMessageError('welcome.state is not a state');
  const s = o.settings;
  if (typeof s !== 'object' || s === null) throw new MalformedMessageError('welcome.settings must be an object');
  const so = s as Obj;
  return {
    state,
    settings: {
      flushMs: nonNegInt(so, 'flushMs', 'welcome.settings'),
      maxFrameBytes: nonNegInt(so, 'maxFrameBytes', 'welcome.settings'),
      ...(so.bufferBytes !== undefined && { bufferBytes: nonNegInt(so, 'bufferBytes', 'welcome.settings') }),
    },
    ackedSeq: nonNegInt(o, 'ackedSeq', 'welcome'),
    agentId: str(o, 'agentId', 'welcome', 256),
    sidecarVersion: str(o, 'sidecarVersion', 'welcome', 64),
  };
}

export function encodeStateChange(m: StateChange): Buffer {
  return json(MessageType.StateChange, m);
}

export function decodeStateChange(p: Buffer): StateChange {
  const o = parseJson(p, 'state');
  if (!isSidecarState(o.state)) throw new MalformedMessageError('state.state is not a state');
  return { state: o.state, cause: str(o, 'cause', 'state', 1024) };
}

export function encodeTrace(m: ProfilePack): Buffer {
  return json(MessageType.Trace, m);
}

export function decodeTrace(p: Buffer): ProfilePack {
  return traceFromObject(parseJson(p, 'trace'));
}

/** Validate a parsed trace object (also used for upstream text batches). */
export function traceFromObject(o: Obj): ProfilePack {
  const stepsRaw = o.steps;
  if (!Array.isArray(stepsRaw)) throw new MalformedMessageError('trace.steps must be an array');
  const steps: TraceStep[] = stepsRaw.map((s: unknown, i) => {
    if (typeof s !== 'object' || s === null) throw new MalformedMessageError(`trace.steps[${i}] must be an object`);
    const so = s as Obj;
    const w = `trace.steps[${i}]`;
    return { type: str(so, 'type', w, 64), text: str(so, 'text', w), durationMs: num(so, 'durationMs', w), offsetMs: num(so, 'offsetMs', w) };
  });
  const m: ProfilePack = {
    txid: str(o, 'txid', 'trace', 64),
    traceId: str(o, 'traceId', 'trace', 64),
    spanId: str(o, 'spanId', 'trace', 64),
    name: str(o, 'name', 'trace', 1024),
    startTime: num(o, 'startTime', 'trace'),
    durationMs: num(o, 'durationMs', 'trace'),
    steps,
  };
  const parent = optStr(o, 'parentSpanId', 'trace');
  if (parent !== undefined) m.parentSpanId = parent;
  const error = optStr(o, 'error', 'trace');
  if (error !== undefined) m.error = error;
  return m;
}

export function encodeActiveStack(m: ActiveStackPack): Buffer {
  return json(MessageType.ActiveStack, m);
}

export function decodeActiveStack(p: Buffer): ActiveStackPack {
  return activeStackFromObject(parseJson(p, 'activeStack'));
}

/** Validate a parsed activeStack object (also used for upstream text batches). */
export function activeStackFromObject(o: Obj): ActiveStackPack {
  const frames = o.frames;
  if (!Array.isArray(frames) || frames.some((f) => typeof f !== 'string')) throw new MalformedMessageError('activeStack.frames must be strings');
  return {
    txid: str(o, 'txid', 'activeStack', 64),
    name: str(o, 'name', 'activeStack', 1024),
    ts: num(o, 'ts', 'activeStack'),
    elapsedMs: num(o, 'elapsedMs', 'activeStack'),
    frames: frames as string[],
  };
}

export function encodeEvent(m: EventPack): Buffer {
  return json(MessageType.Event, m);
}

export function decodeEvent(p: Buffer): EventPack {
  return eventFromObject(parseJson(p, 'event'));
}

/** Validate a parsed event object (also used for upstream text batches). */
export function eventFromObject(o: Obj): EventPack {
  const m: EventPack = { ts: num(o, 'ts', 'event'), type: str(o, 'type', 'event', 256), message: str(o, 'message', 'event') };
  const a = o.attributes;
  if (a !== undefined) {
    if (typeof a !== 'object' || a === null || Array.isArray(a)) throw new MalformedMessageError('event.attributes must be an object');
    for (const v of Object.values(a as Obj)) {
      const t = typeof v;
      if (t !== 'string' && t !== 'number' && t !== 'boolean') throw new MalformedMessageError('event.attributes values must be string, number or boolean');
    }
    m.attributes = a as Record<string, string | number | boolean>;
  }
  return m;
}

export function encodeSnapshot(m: SnapshotPack): Buffer {
  return json(MessageType.Snapshot, m);
}

/** Whether arrays/objects in v nest at most max deep. Iterative: v may nest deeper than the call stack allows. */
function nestsWithin(v: unknown, max: number): boolean {
  const stack: [unknown, number][] = [[v, 1]];
  for (let top = stack.pop(); top !== undefined; top = stack.pop()) {
    const [x, depth] = top;
    if (typeof x !== 'object' || x === null) continue;
    if (depth > max) return false;
    for (const c of Object.values(x)) stack.push([c, depth + 1]);
  }
  return true;
}

export function decodeSnapshot(p: Buffer): SnapshotPack {
  return snapshotFromObject(parseJson(p, 'snapshot'));
}

/** Validate a parsed snapshot object (also used for upstream text batches). */
export function snapshotFromObject(o: Obj): SnapshotPack {
  if (!('data' in o)) throw new MalformedMessageError('snapshot.data is missing');
  if (!nestsWithin(o.data, LIMITS.jsonDepth)) throw new MalformedMessageError(`snapshot.data nests deeper than ${LIMITS.jsonDepth}`);
  return { ts: num(o, 'ts', 'snapshot'), kind: str(o, 'kind', 'snapshot', 256), data: o.data };
}

/** seq (u48) | JSON { name, ts } */
export function encodeBtRegistration(m: BtRegistration): Buffer {
  const w = new Writer(64);
  w.u48(m.seq);
  w.bytes(Buffer.from(JSON.stringify({ name: m.name, ts: m.ts })));
  return w.frame(MessageType.BtRegistration);
}

export function decodeBtRegistration(p: Buffer): BtRegistration {
  const r = new Reader(p);
  const seq = r.u48();
  const o = parseJson(r.view(r.remaining), 'btRegistration');
  const name = str(o, 'name', 'btRegistration', 1024);
  if (name.length === 0) throw new MalformedMessageError('btRegistration.name is empty');
  return { seq, name, ts: num(o, 'ts', 'btRegistration') };
}

/** Durable frames carry their seq in the first 6 bytes of the payload. */
export function peekSeq(p: Buffer): number {
  if (p.length < 6) throw new MalformedMessageError('truncated seq');
  return p.readUIntLE(0, 6);
}

export function encodeHeartbeat(ts: number): Buffer {
  return new Writer(16).f64(ts).frame(MessageType.Heartbeat);
}

export function decodeHeartbeat(p: Buffer): number {
  const r = new Reader(p);
  const ts = r.f64();
  r.expectEnd('heartbeat');
  return ts;
}

/** Cumulative: every durable frame with seq ≤ this one is committed. */
export function encodeAck(seq: number): Buffer {
  return new Writer(16).u48(seq).frame(MessageType.Ack);
}

export function decodeAck(p: Buffer): number {
  const r = new Reader(p);
  const seq = r.u48();
  r.expectEnd('ack');
  return seq;
}

export function encodeError(m: ErrorMessage): Buffer {
  return json(MessageType.Error, m);
}

export function decodeError(p: Buffer): ErrorMessage {
  const o = parseJson(p, 'error');
  return { code: str(o, 'code', 'error', 128), message: str(o, 'message', 'error', 4096) };
}

export function encodeStatusRequest(): Buffer {
  return json(MessageType.StatusRequest, {});
}

export function encodeStatusResponse(status: unknown): Buffer {
  return json(MessageType.StatusResponse, status);
}

export function decodeStatusResponse(p: Buffer): Obj {
  return parseJson(p, 'status');
}

export function encodeControl(m: ControlMessage): Buffer {
  return json(MessageType.Control, m);
}

export function decodeControl(p: Buffer): ControlMessage {
  return { command: str(parseJson(p, 'control'), 'command', 'control', 64) };
}

export function encodeControlResult(m: ControlResult): Buffer {
  return json(MessageType.ControlResult, m);
}

export function decodeControlResult(p: Buffer): ControlResult {
  const o = parseJson(p, 'controlResult');
  if (typeof o.ok !== 'boolean') throw new MalformedMessageError('controlResult.ok must be a boolean');
  return { ok: o.ok, message: str(o, 'message', 'controlResult', 4096) };
}

// ---------------------------------------------------------------------------
// Metrics (binary, durable).
//
//   payload := seq u48 | ts f64 (window start, epoch ms) | windowMs varint | n varint | point × n
//   point   := seriesLen varint | series | count varint | sum f64 | min f64 | max f64
//              | last f64            (gauge only)
//              | sketch buckets      (histogram only)
//   series  := kind u8 | name str | tagCount varint | (key str | value str) × tagCount   (keys sorted)
//
// The series bytes are produced once per handle and copied on every flush; the
// receiver uses their latin1 image as a map key, so it parses a series only the
// first time it sees it.

export const MetricKind = { Counter: 0, Gauge: 1, Histogram: 2 } as const;
export type MetricKindCode = (typeof MetricKind)[keyof typeof MetricKind];
export const METRIC_KIND_NAMES = ['counter', 'gauge', 'histogram'] as const;
export type MetricKindName = (typeof METRIC_KIND_NAMES)[number];

export type Tags = Record<string, string>;

export interface Series {
  /** Unique per (kind, name, sorted tags): the latin1 image of the series bytes. */
  key: string;
  kind: MetricKindCode;
  name: string;
  tags: Tags;
}

export interface MetricPoint {
  series: Series;
  count: number;
  sum: number;
  min: number;
  max: number;
  /** Gauges: the last value set; NaN otherwise. */
  last: number;
  /** Histograms: the distribution; null otherwise. */
  sketch: Sketch | null;
}

export interface MetricsMessage {
  seq: number;
  ts: number;
  windowMs: number;
  points: MetricPoint[];
}

/** Sort tags by key. Tag values are strings; callers stringify. */
export function sortedTagEntries(tags: Tags | undefined): [string, string][] {
  if (tags === undefined) return [];
  return Object.entries(tags).sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
}

export function encodeSeries(kind: MetricKindCode, name: string, tags: Tags | undefined): Buffer {
  const w = new Writer(64);
  w.u8(kind).str(name);
  const entries = sortedTagEntries(tags);
  w.varint(entries.length);
  for (const [k, v] of entries) w.str(k).str(v);
  return w.body();
}

export function seriesKey(seriesBytes: Buffer): string {
  return seriesBytes.toString('latin1');
}

function decodeSeriesBody(view: Buffer, key: string): Series {
  const r = new Reader(view);
  const kind = r.u8();
  if (kind > 2) throw new MalformedMessageError(`unknown metric kind ${kind}`);
  const name = r.str();
  if (name.length === 0 || Buffer.byteLength(name) > LIMITS.nameBytes) throw new MalformedMessageError('metric name empty or too long');
  const n = r.varint();
  if (n > LIMITS.tagCount) throw new MalformedMessageError(`metric has ${n} tags, limit ${LIMITS.tagCount}`);
  const tags: Tags = {};
  let prev = '';
  for (let i = 0; i < n; i++) {
    const k = r.str();
    const v = r.str();
    if (k.length === 0 || k.length > LIMITS.tagBytes || v.length > LIMITS.tagBytes) throw new MalformedMessageError('tag key empty or tag too long');
    if (i > 0 && k <= prev) throw new MalformedMessageError('tag keys not sorted or duplicated');
    prev = k;
    // Not `tags[k] = v`: for k = '__proto__' that would call the prototype setter and drop the tag.
    Object.defineProperty(tags, k, { value: v, enumerable: true, writable: true, configurable: true });
  }
  r.expectEnd('series');
  return { key, kind: kind as MetricKindCode, name, tags };
}

export function writeMetricsHeader(w: Writer, seq: number, ts: number, windowMs: number, n: number): void {
  w.u48(seq).f64(ts).varint(windowMs).varint(n);
}

/** Write one point; `last` is used for gauges, `sketch` for histograms. */
export function writePoint(w: Writer, seriesBytes: Buffer, count: number, sum: number, min: number, max: number, last: number, sketch: Sketch | null): void {
  w.varint(seriesBytes.length).bytes(seriesBytes).varint(count).f64(sum).f64(min).f64(max);
  const kind = seriesBytes[0];
  if (kind === MetricKind.Gauge) w.f64(last);
  else if (kind === MetricKind.Histogram) (sketch as Sketch).encodeBuckets(w);
}

export function encodeMetrics(m: MetricsMessage, w = new Writer(1024)): Buffer {
  writeMetricsHeader(w, m.seq, m.ts, m.windowMs, m.points.length);
  for (const p of m.points) {
    const bytes = encodeSeries(p.series.kind, p.series.name, p.series.tags);
    writePoint(w, bytes, p.count, p.sum, p.min, p.max, p.last, p.sketch);
  }
  return w.frame(MessageType.Metrics);
}

/** Read one point written by writePoint. */
export function readPoint(r: Reader, seriesCache?: Map<string, Series>): MetricPoint {
  const slen = r.varint();
  const sview = r.view(slen);
  if (slen === 0) throw new MalformedMessageError('empty series');
  const key = sview.toString('latin1');
  let series = seriesCache?.get(key);
  if (series === undefined) {
    series = decodeSeriesBody(sview, key);
    seriesCache?.set(key, series);
  }
  const count = r.varint();
  const sum = r.f64();
  const min = r.f64();
  const max = r.f64();
  if (!Number.isFinite(sum) || (count > 0 && (!Number.isFinite(min) || !Number.isFinite(max) || min > max))) {
    throw new MalformedMessageError('point statistics are not finite or min > max');
  }
  let last = Number.NaN;
  let sketch: Sketch | null = null;
  if (series.kind === MetricKind.Gauge) {
    last = r.f64();
    if (!Number.isFinite(last)) throw new MalformedMessageError('gauge value is not finite');
  } else if (series.kind === MetricKind.Histogram) {
    sketch = new Sketch();
    const total = sketch.decodeBuckets(r);
    if (total !== count) throw new MalformedMessageError(`sketch holds ${total} values, point says ${count}`);
    sketch.count = count;
    sketch.sum = sum;
    sketch.min = min;
    sketch.max = max;
  }
  return { series, count, sum, min, max, last, sketch };
}

/**
 * Decode a metrics payload. `seriesCache` (optional, owned by the caller) maps
 * series keys to parsed series so repeated series are not re-parsed; the caller
 * bounds its size.
 */
export function decodeMetrics(p: Buffer, seriesCache?: Map<string, Series>): MetricsMessage {
  const r = new Reader(p);
  const seq = r.u48();
  const ts = r.f64();
  if (!Number.isFinite(ts) || ts < 0) throw new MalformedMessageError('metrics.ts must be a non-negative finite number');
  const windowMs = r.varint();
  const n = r.varint();
  if (n > LIMITS.pointsPerFrame || n > r.remaining) throw new MalformedMessageError(`metrics declares ${n} points`);
  const points: MetricPoint[] = [];
  for (let i = 0; i < n; i++) points.push(readPoint(r, seriesCache));
  r.expectEnd('metrics');
  return { seq, ts, windowMs, points };
}

// ---------------------------------------------------------------------------

export type ShimToSidecar =
  | { type: 'Hello'; body: Hello }
  | { type: 'Metrics'; body: MetricsMessage }
  | { type: 'Trace'; body: ProfilePack }
  | { type: 'ActiveStack'; body: ActiveStackPack }
  | { type: 'Event'; body: EventPack }
  | { type: 'Snapshot'; body: SnapshotPack }
  | { type: 'BtRegistration'; body: BtRegistration }
  | { type: 'Heartbeat'; body: number };

/** Decode any message a shim may send. Throws UnknownMessageTypeError / MalformedMessageError. */
export function decodeShimMessage(type: number, p: Buffer, seriesCache?: Map<string, Series>): ShimToSidecar {
  switch (type) {
    case MessageType.Hello:
      return { type: 'Hello', body: decodeHello(p) };
    case MessageType.Metrics:
      return { type: 'Metrics', body: decodeMetrics(p, seriesCache) };
    case MessageType.Trace:
      return { type: 'Trace', body: decodeTrace(p) };
    case MessageType.ActiveStack:
      return { type: 'ActiveStack', body: decodeActiveStack(p) };
    case MessageType.Event:
      return { type: 'Event', body: decodeEvent(p) };
    case MessageType.Snapshot:
      return { type: 'Snapshot', body: decodeSnapshot(p) };
    case MessageType.BtRegistration:
      return { type: 'BtRegistration', body: decodeBtRegistration(p) };
    case MessageType.Heartbeat:
      return { type: 'Heartbeat', body: decodeHeartbeat(p) };
    default:
      throw new UnknownMessageTypeError(type);
  }
}
