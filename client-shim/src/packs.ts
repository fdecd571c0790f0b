import { type EventPack, MessageType } from '@apm-sidecar/proto';
import { SnapshotDataError } from './errors';

// Shaping of what the app hands in (events, snapshots, tag values) into what the sidecar accepts.

/** A tag value within the series limits (LIMITS.tagBytes): 85 UTF-16 units never exceed 255 bytes. */
export function tagValue(s: string): string {
  return s.length <= 85 || Buffer.byteLength(s) <= 256 ? s : s.slice(0, 85);
}

/**
 * Snapshot frame, serialized here rather than with encodeSnapshot: JSON.stringify
 * silently omits a `data` that is a function, a symbol or whose toJSON returns
 * undefined, and the sidecar rejects a snapshot without data by closing the
 * connection. Throws (counted as invalid) when data cannot be serialized.
 */
export function snapshotFrame(ts: number, kind: string, data: unknown): Buffer {
  const json = JSON.stringify(data);
  if (typeof json !== 'string') throw new SnapshotDataError();
  const body = `{"ts":${ts},"kind":${JSON.stringify(kind)},"data":${json}}`;
  const n = Buffer.byteLength(body);
  const out = Buffer.allocUnsafe(5 + n);
  out.writeUInt32LE(n + 1, 0);
  out[4] = MessageType.Snapshot;
  out.write(body, 5, n, 'utf8');
  return out;
}

export interface EventInput {
  type: string;
  message: string;
  attributes?: Record<string, string | number | boolean>;
}

/** An event with string type and message, bounded; attributes keep only valid values. Null if attributes is not an object. */
export function eventPack(e: EventInput): EventPack | null {
  const pack: EventPack = {
    ts: Date.now(),
    type: e.type.slice(0, 256),
    message: e.message.slice(0, 16 * 1024),
  };
  if (e.attributes !== undefined) {
    if (typeof e.attributes !== 'object' || e.attributes === null) return null;
    const attrs: Record<string, string | number | boolean> = {};
    for (const [k, v] of Object.entries(e.attributes)) {
      const t = typeof v;
      if (t === 'string' || t === 'boolean' || (t === 'number' && Number.isFinite(v))) attrs[k] = v;
    }
    pack.attributes = attrs;
  }
  return pack;
}

const MAX_STACK_FRAMES = 256;

/** An active stack's frames (an array, or one string of lines): trimmed, non-empty, at most 256 of 1024 chars; null when neither. */
export function stackFrames(frames: unknown): string[] | null {
  let list: unknown[];
  if (typeof frames === 'string') list = frames.split('\n');
  else if (Array.isArray(frames)) list = frames;
  else return null;
  const out: string[] = [];
  for (const f of list) {
    if (out.length >= MAX_STACK_FRAMES) break;
    if (typeof f === 'string' && f.trim().length > 0) out.push(f.trim().slice(0, 1024));
  }
  return out;
}
