import { Reader, Writer } from '../buffer';
import { MalformedMessageError } from '../errors';
import {
  type ActiveStackPack,
  type EventPack,
  type MetricPoint,
  type Obj,
  type ProfilePack,
  type Series,
  type SnapshotPack,
  activeStackFromObject,
  eventFromObject,
  parseJson,
  readPoint,
  snapshotFromObject,
  traceFromObject,
  writePoint,
} from '../messages';
import type { Sealer } from './seal';
import { Inner } from './types';

/**
 * Bodies of sealed upstream messages (see types.ts for who sends what).
 *
 *   MetricBatch := n varint | pack × n
 *   pack        := packId str | intervalStart f64 | intervalMs varint | points varint | point × points
 *   point       := as in the IPC Metrics message (series bytes, statistics, sketch)
 *
 * A pack id is unique per agent and stable across resends, so the collector
 * stores each pack once (exactly-once by identity under at-least-once delivery).
 */
export interface AgentInfo {
  agentId: string;
  host: string;
  version: string;
  apps: string[];
  /**
   * The agent's read timeout (tcp_so_timeout): it ends a session that receives nothing this long.
   * The collector keeps such an agent hearing from it while a frame is still arriving (a slow link).
   * Absent from agents that predate it.
   */
  soTimeoutMs?: number;
}

export interface AgentConfig {
  configVersion: number;
  settings: Record<string, string | number | boolean>;
}

export interface LicenseGrant {
  granted: boolean;
  reason: string;
}

export interface UpMetricPack {
  packId: string;
  intervalStart: number;
  intervalMs: number;
  points: MetricPoint[];
}

export interface Origin {
  app: string;
  instanceId: string;
  pid: number;
}

export type TextItem =
  | { kind: 'trace'; origin: Origin; trace: ProfilePack }
  | { kind: 'activeStack'; origin: Origin; stack: ActiveStackPack }
  | { kind: 'event'; origin: Origin; event: EventPack }
  | { kind: 'snapshot'; origin: Origin; snapshot: SnapshotPack }
  | { kind: 'btRegistration'; origin: Origin; name: string; ts: number };

function jsonBody(v: unknown): Buffer {
  return Buffer.from(JSON.stringify(v));
}

function str(o: Obj, k: string, what: string, max = 1024): string {
  const v = o[k];
  if (typeof v !== 'string' || v.length > max) throw new MalformedMessageError(`${what}.${k} must be a string of at most ${max}`);
  return v;
}

export function encodeAgentInfo(m: AgentInfo): Buffer {
  return jsonBody(m);
}

export function decodeAgentInfo(b: Buffer): AgentInfo {
  const o = parseJson(b, 'agentInfo');
  const apps = o.apps;
  if (!Array.isArray(apps) || apps.length > 1024 || apps.some((a) => typeof a !== 'string')) throw new MalformedMessageError('agentInfo.apps must be strings');
  const so = o.soTimeoutMs;
  if (so !== undefined && (typeof so !== 'number' || !Number.isInteger(so) || so < 1 || so > 2 ** 31 - 1))
    throw new MalformedMessageError('agentInfo.soTimeoutMs must be an integer of milliseconds');
  return {
    agentId: str(o, 'agentId', 'agentInfo', 256),
    host: str(o, 'host', 'agentInfo', 256),
    version: str(o, 'version', 'agentInfo', 64),
    apps: apps as string[],
    ...(so !== undefined && { soTimeoutMs: so }),
  };
}

export function encodeAgentConfig(m: AgentConfig): Buffer {
  return jsonBody(m);
}

export function decodeAgentConfig(b: Buffer): AgentConfig {
  const o = parseJson(b, 'config');
  const s = o.settings;
  if (typeof o.configVersion !== 'number' || typeof s !== 'object' || s === null || Array.isArray(s))
    throw new MalformedMessageError('config must have configVersion and settings');
  return { configVersion: o.configVersion, settings: s as Record<string, string | number | boolean> };
}

export function encodeLicense(m: LicenseGrant): Buffer {
  return jsonBody(m);
}

export function decodeLicense(b: Buffer): LicenseGrant {
  const o = parseJson(b, 'license');
  if (typeof o.granted !== 'boolean') throw new MalformedMessageError('license.granted must be a boolean');
  return { granted: o.granted, reason: str(o, 'reason', 'license') };
}

export function encodeUpError(code: string, message: string): Buffer {
  return jsonBody({ code, message });
}

export function decodeUpError(b: Buffer): { code: string; message: string } {
  const o = parseJson(b, 'error');
  return { code: str(o, 'code', 'error', 128), message: str(o, 'message', 'error', 4096) };
}

export function encodeUpAck(counter: number): Buffer {
  return new Writer(16).u48(counter).body();
}

export function decodeUpAck(b: Buffer): number {
  const r = new Reader(b);
  const n = r.u48();
  r.expectEnd('ack');
  return n;
}

export function encodePing(ts: number): Buffer {
  return new Writer(16).f64(ts).body();
}

export function decodePing(b: Buffer): number {
  const r = new Reader(b);
  const ts = r.f64();
  r.expectEnd('ping');
  return ts;
}

/**
 * Keepalives, handled alike by both ends: a Ping is answered (`write`) with the sealed Pong
 * carrying its timestamp back, so the pinging end can measure the round trip; a Pong needs
 * nothing. True when `m` was a keepalive.
 */
export function answerKeepalive(sealer: Sealer, m: { inner: number; body: Buffer }, write: (frame: Buffer) => void): boolean {
  if (m.inner === Inner.Ping) write(sealer.text(Inner.Pong, encodePing(decodePing(m.body))));
  return m.inner === Inner.Ping || m.inner === Inner.Pong;
}

/** Series bytes of a decoded series: its key is their latin1 image. */
export function seriesBytes(s: Series): Buffer {
  return Buffer.from(s.key, 'latin1');
}

/** Append one pack to a batch being built (`w` holds the packs; the count goes in front at the end). */
export function writeMetricPack(w: Writer, p: UpMetricPack): void {
  w.str(p.packId).f64(p.intervalStart).varint(p.intervalMs).varint(p.points.length);
  for (const pt of p.points) writePoint(w, seriesBytes(pt.series), pt.count, pt.sum, pt.min, pt.max, pt.last, pt.sketch);
}

export function encodeMetricBatch(packs: UpMetricPack[]): Buffer {
  const body = new Writer(4096);
  for (const p of packs) writeMetricPack(body, p);
  const w = new Writer(body.length + 16);
  w.varint(packs.length).bytes(body.body());
  return w.body();
}

/**
 * Read one pack written by writeMetricPack. Histogram points keep their sketch as the
 * checked bytes it came in (MetricPoint.sketchBytes): the collector stores those bytes,
 * and a Sketch is built only for a point whose `sketch` is read.
 */
export function readMetricPack(r: Reader, seriesCache?: Map<string, Series>): UpMetricPack {
  const packId = r.str();
  if (packId.length === 0 || packId.length > 256) throw new MalformedMessageError('pack id empty or too long');
  const intervalStart = r.f64();
  if (!Number.isFinite(intervalStart) || intervalStart < 0) throw new MalformedMessageError('pack interval start');
  const intervalMs = r.varint();
  const np = r.varint();
  if (np > r.remaining) throw new MalformedMessageError(`pack declares ${np} points`);
  const points: MetricPoint[] = [];
  for (let j = 0; j < np; j++) points.push(readPoint(r, seriesCache, true));
  return { packId, intervalStart, intervalMs, points };
}

/** One pack on its own (the sidecar keeps packs encoded like this in its retention). */
export function encodeMetricPack(p: UpMetricPack): Buffer {
  const w = new Writer(256 + 96 * p.points.length);
  writeMetricPack(w, p);
  return w.body();
}

export function decodeMetricPack(b: Buffer, seriesCache?: Map<string, Series>): UpMetricPack {
  const r = new Reader(b);
  const p = readMetricPack(r, seriesCache);
  r.expectEnd('metric pack');
  return p;
}

export function decodeMetricBatch(b: Buffer, seriesCache?: Map<string, Series>): UpMetricPack[] {
  const r = new Reader(b);
  const n = r.varint();
  if (n > r.remaining) throw new MalformedMessageError(`metric batch declares ${n} packs`);
  const packs: UpMetricPack[] = [];
  for (let i = 0; i < n; i++) packs.push(readMetricPack(r, seriesCache));
  r.expectEnd('metric batch');
  return packs;
}

function originFrom(o: unknown): Origin {
  if (typeof o !== 'object' || o === null) throw new MalformedMessageError('item.origin must be an object');
  const x = o as Obj;
  if (typeof x.app !== 'string' || typeof x.instanceId !== 'string' || typeof x.pid !== 'number') throw new MalformedMessageError('item.origin fields');
  return { app: x.app.slice(0, 256), instanceId: x.instanceId.slice(0, 128), pid: x.pid };
}

export function encodeTextBatch(items: TextItem[]): Buffer {
  return jsonBody({ items });
}

export function decodeTextBatch(b: Buffer): TextItem[] {
  const o = parseJson(b, 'textBatch');
  if (!Array.isArray(o.items)) throw new MalformedMessageError('textBatch.items must be an array');
  return o.items.map((raw: unknown): TextItem => {
    if (typeof raw !== 'object' || raw === null) throw new MalformedMessageError('textBatch item must be an object');
    const it = raw as Obj;
    const origin = originFrom(it.origin);
    const obj = (k: string): Obj => {
      const v = it[k];
      if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new MalformedMessageError(`item.${k} must be an object`);
      return v as Obj;
    };
    switch (it.kind) {
      case 'trace':
        return { kind: 'trace', origin, trace: traceFromObject(obj('trace')) };
      case 'activeStack':
        return { kind: 'activeStack', origin, stack: activeStackFromObject(obj('stack')) };
      case 'event':
        return { kind: 'event', origin, event: eventFromObject(obj('event')) };
      case 'snapshot':
        return { kind: 'snapshot', origin, snapshot: snapshotFromObject(obj('snapshot')) };
      case 'btRegistration': {
        const name = str(it, 'name', 'item', 1024);
        if (typeof it.ts !== 'number') throw new MalformedMessageError('item.ts must be a number');
        return { kind: 'btRegistration', origin, name, ts: it.ts };
      }
      default:
        throw new MalformedMessageError(`unknown item kind ${String(it.kind)}`);
    }
  });
}
