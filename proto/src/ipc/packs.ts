import { Reader, Writer } from '../buffer';
import { MalformedMessageError } from '../errors';
import { type Obj, json, num, optStr, parseJson, str } from './json';
import { type ActiveStackPack, type BtRegistration, type EventPack, LIMITS, MessageType, type ProfilePack, type SnapshotPack, type TraceStep } from './types';

// Text-heavy packs (traces, stacks, events, snapshots, BT registrations): JSON bodies, validated field by field.

// Trace messages are binary on the IPC (ipc/trace.ts); this validates the JSON form upstream text batches carry.

/** Validate a parsed trace object (upstream text batches). */
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
