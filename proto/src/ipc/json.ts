import { MalformedMessageError } from '../errors';

// Small validators for JSON bodies: decoders return typed values or throw
// MalformedMessageError. Internal to the ipc codecs; only Obj and parseJson are public.

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

export function str(o: Obj, k: string, what: string, max = 64 * 1024): string {
  const v = o[k];
  if (typeof v !== 'string') throw new MalformedMessageError(`${what}.${k} must be a string`);
  if (v.length > max) throw new MalformedMessageError(`${what}.${k} longer than ${max}`);
  return v;
}

export function optStr(o: Obj, k: string, what: string): string | undefined {
  return o[k] === undefined ? undefined : str(o, k, what);
}

export function num(o: Obj, k: string, what: string): number {
  const v = o[k];
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new MalformedMessageError(`${what}.${k} must be a finite number`);
  return v;
}

export function nonNegInt(o: Obj, k: string, what: string): number {
  const v = num(o, k, what);
  if (!Number.isSafeInteger(v) || v < 0) throw new MalformedMessageError(`${what}.${k} must be a non-negative integer`);
  return v;
}

/** A whole frame (header included) whose body is `body` as JSON. */
export function json(type: number, body: unknown): Buffer {
  const s = JSON.stringify(body);
  const n = Buffer.byteLength(s);
  const out = Buffer.allocUnsafe(5 + n);
  out.writeUInt32LE(n + 1, 0);
  out[4] = type;
  out.write(s, 5, n, 'utf8');
  return out;
}
