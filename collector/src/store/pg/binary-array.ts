import { pgText } from './sql-values';

/**
 * One-dimensional PostgreSQL arrays in the binary wire format (array_send / array_recv), for
 * bulk writes as `unnest($n::T[])`. The driver sends a Buffer parameter in binary format, and
 * the server reads it without parsing text: no number printed and parsed back, no bytea hex,
 * no escaping, on either side.
 *
 *   ndim int4 = 1 | has-nulls int4 | element type oid int4 | length int4 | lower bound int4 = 1
 *   then per element: byte length int4 (-1 for NULL) | the element's binary form
 *
 * An empty array is ndim 0, has-nulls 0, the element type, and nothing else.
 */

export const OID = { bytea: 17, int8: 20, int2: 21, text: 25, float8: 701 } as const;

const HEADER = 20;
const TWO_32 = 2 ** 32;

function header(b: Buffer, oid: number, n: number, hasNull: boolean): number {
  if (n === 0) {
    b.writeInt32BE(0, 0);
    b.writeInt32BE(0, 4);
    b.writeInt32BE(oid, 8);
    return 12;
  }
  b.writeInt32BE(1, 0);
  b.writeInt32BE(hasNull ? 1 : 0, 4);
  b.writeInt32BE(oid, 8);
  b.writeInt32BE(n, 12);
  b.writeInt32BE(1, 16);
  return HEADER;
}

/** float8[]; null elements are NULL. */
export function float8Array(values: readonly (number | null)[]): Buffer {
  const b = Buffer.allocUnsafe(HEADER + values.length * 12);
  let at = header(b, OID.float8, values.length, values.includes(null));
  for (const v of values) {
    if (v === null) {
      b.writeInt32BE(-1, at);
      at += 4;
    } else {
      b.writeInt32BE(8, at);
      b.writeDoubleBE(v, at + 4);
      at += 12;
    }
  }
  return b.subarray(0, at);
}

/** int8[] of safe integers (a fraction is dropped); null elements are NULL. */
export function int8Array(values: readonly (number | null)[]): Buffer {
  const b = Buffer.allocUnsafe(HEADER + values.length * 12);
  let at = header(b, OID.int8, values.length, values.includes(null));
  for (const v of values) {
    if (v === null) {
      b.writeInt32BE(-1, at);
      at += 4;
    } else {
      const n = Math.trunc(v);
      const hi = Math.floor(n / TWO_32);
      b.writeInt32BE(8, at);
      b.writeInt32BE(hi, at + 4);
      b.writeUInt32BE(n - hi * TWO_32, at + 8);
      at += 12;
    }
  }
  return b.subarray(0, at);
}

/** int2[] of small integers. */
export function int2Array(values: readonly number[]): Buffer {
  const b = Buffer.allocUnsafe(HEADER + values.length * 6);
  let at = header(b, OID.int2, values.length, false);
  for (const v of values) {
    b.writeInt32BE(2, at);
    b.writeInt16BE(v, at + 4);
    at += 6;
  }
  return b.subarray(0, at);
}

/** bytea[] (or text[] of UTF-8 bytes, with `oid` OID.text); null elements are NULL. */
export function bytesArray(values: readonly (Buffer | null)[], oid: number = OID.bytea): Buffer {
  let size = HEADER;
  let hasNull = false;
  for (const v of values) {
    size += 4 + (v === null ? 0 : v.length);
    if (v === null) hasNull = true;
  }
  const b = Buffer.allocUnsafe(size);
  let at = header(b, oid, values.length, hasNull);
  for (const v of values) {
    if (v === null) {
      b.writeInt32BE(-1, at);
      at += 4;
    } else {
      b.writeInt32BE(v.length, at);
      v.copy(b, at + 4);
      at += 4 + v.length;
    }
  }
  return b.subarray(0, at);
}

/** text[] of strings (U+0000, which text cannot hold, as U+FFFD: sql-values.ts); null elements are NULL. */
export function textArray(values: readonly (string | null)[]): Buffer {
  return bytesArray(
    values.map((s) => (s === null ? null : Buffer.from(pgText(s), 'utf8'))),
    OID.text,
  );
}
