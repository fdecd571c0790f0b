import { InternalError, MalformedMessageError } from '@apm-sidecar/proto';
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
const TWO_63 = 2 ** 63;

/** x truncated to an integer PostgreSQL's int8 holds; beyond it the batch is refused, never wrapped. */
function int8Of(x: number): number {
  const t = Math.trunc(x);
  if (!(t >= -TWO_63 && t < TWO_63)) throw new MalformedMessageError(`${x} does not fit a 64-bit integer column`);
  return t;
}

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
      const n = int8Of(v);
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

/**
 * Several arrays of one statement written into one allocation, through a DataView: a batch's
 * columns, each a view of the shared buffer. The buffer is sized by the caller from the
 * `*Size` functions; a column written past it throws RangeError (a bug, never data).
 *
 * Numeric columns come as numbers with NaN for NULL where the column takes NULL (`nullNaN`):
 * the values that reach a nullable column are finite or absent (min, max and last of a row
 * without them), so NaN is free to mean "none" there. Without `nullNaN`, NaN and ±Infinity are
 * written as the float8 values they are.
 *
 * With `bind`, the buffer is the statement's whole Bind message (protocol message 'B'): every
 * parameter in binary format, each written in place behind its length, so the message goes to
 * the socket as it is (bound-query.ts) instead of being copied parameter by parameter into the
 * driver's own buffer, which grows by reallocation to the size of the batch on every call.
 *
 *   'B' | length int4 | portal "" | statement cstring | 1 int2 | 1 int2 (all binary)
 *   | n int2 | n × (length int4 | bytes) | 1 int2 | 0 int2 (results in text)
 */
export class ArrayBatch {
  private readonly buf: Buffer;
  private readonly view: DataView;
  private at = 0;
  /** Bind mode: parameters still to write (-1: not a Bind message). */
  private paramsLeft = -1;

  /** `size`: the arrays' bytes, from the `*Size` functions (with `bind`, bindSize is added here). */
  constructor(size: number, bind?: { statement: string; params: number }) {
    this.buf = Buffer.allocUnsafe(bind === undefined ? size : size + ArrayBatch.bindSize(bind.statement, bind.params));
    this.view = new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.byteLength);
    if (bind !== undefined) {
      const v = this.view;
      v.setUint8(0, 0x42);
      // 1: the length, once known; 5: the unnamed portal.
      v.setUint8(5, 0);
      const at = 6 + this.buf.write(bind.statement, 6, 'utf8');
      v.setUint8(at, 0);
      v.setInt16(at + 1, 1);
      v.setInt16(at + 3, 1);
      v.setInt16(at + 5, bind.params);
      this.at = at + 7;
      this.paramsLeft = bind.params;
    }
  }

  /** Bytes of a Bind message's own parts, for `params` parameters. */
  static bindSize(statement: string, params: number): number {
    return 1 + 4 + 1 + Buffer.byteLength(statement, 'utf8') + 1 + 6 + 4 * params + 4;
  }

  /** A parameter of plain bytes (in bind mode; text in binary format is its UTF-8 bytes). */
  param(bytes: Buffer): void {
    const from = this.header(-1, 0, false);
    this.buf.set(bytes, this.at);
    this.at += bytes.length;
    this.done(from);
  }

  /** The Bind message, once every parameter is written. */
  message(): Buffer {
    if (this.paramsLeft !== 0) throw new InternalError(`Bind message: ${this.paramsLeft} parameters not written`);
    const v = this.view;
    v.setInt16(this.at, 1);
    v.setInt16(this.at + 2, 0);
    this.at += 4;
    v.setInt32(1, this.at - 1);
    return this.buf.subarray(0, this.at);
  }

  static fixedSize(n: number, elemBytes: number): number {
    return HEADER + n * (4 + elemBytes);
  }

  static bytesSize(values: readonly (Buffer | null)[], n: number): number {
    let size = HEADER + 4 * n;
    for (let i = 0; i < n; i++) {
      const v = values[i] as Buffer | null;
      if (v !== null) size += v.length;
    }
    return size;
  }

  /** Start a value (in bind mode behind room for its length); oid -1: no array header. Returns where the value starts. */
  private header(oid: number, n: number, hasNull: boolean): number {
    const v = this.view;
    if (this.paramsLeft === 0) throw new InternalError('Bind message: more parameters than declared');
    if (this.paramsLeft > 0) this.at += 4;
    const from = this.at;
    if (oid === -1) return from;
    if (n === 0) {
      v.setInt32(from, 0);
      v.setInt32(from + 4, 0);
      v.setInt32(from + 8, oid);
      this.at = from + 12;
      return from;
    }
    v.setInt32(from, 1);
    v.setInt32(from + 4, hasNull ? 1 : 0);
    v.setInt32(from + 8, oid);
    v.setInt32(from + 12, n);
    v.setInt32(from + 16, 1);
    this.at = from + HEADER;
    return from;
  }

  private done(from: number): Buffer {
    if (this.paramsLeft > 0) {
      this.view.setInt32(from - 4, this.at - from);
      this.paramsLeft--;
    }
    return this.buf.subarray(from, this.at);
  }

  /** float8[] of values[0..n); with `nullNaN`, NaN is NULL. */
  float8(values: ArrayLike<number>, n: number, nullNaN: boolean): Buffer {
    const from = this.header(OID.float8, n, nullNaN && hasNaN(values, n));
    const v = this.view;
    let at = this.at;
    for (let i = 0; i < n; i++) {
      const x = values[i] as number;
      if (nullNaN && Number.isNaN(x)) {
        v.setInt32(at, -1);
        at += 4;
      } else {
        v.setInt32(at, 8);
        v.setFloat64(at + 4, x);
        at += 12;
      }
    }
    this.at = at;
    return this.done(from);
  }

  /** int8[] of the safe integers values[0..n) (a fraction is dropped); with `nullNaN`, NaN is NULL. */
  int8(values: ArrayLike<number>, n: number, nullNaN: boolean): Buffer {
    const from = this.header(OID.int8, n, nullNaN && hasNaN(values, n));
    const v = this.view;
    let at = this.at;
    for (let i = 0; i < n; i++) {
      const x = values[i] as number;
      if (nullNaN && Number.isNaN(x)) {
        v.setInt32(at, -1);
        at += 4;
      } else {
        const t = int8Of(x);
        const hi = Math.floor(t / TWO_32);
        v.setInt32(at, 8);
        v.setInt32(at + 4, hi);
        v.setUint32(at + 8, t - hi * TWO_32);
        at += 12;
      }
    }
    this.at = at;
    return this.done(from);
  }

  /** int2[] of the small integers values[0..n). */
  int2(values: ArrayLike<number>, n: number): Buffer {
    const from = this.header(OID.int2, n, false);
    const v = this.view;
    let at = this.at;
    for (let i = 0; i < n; i++) {
      v.setInt32(at, 2);
      v.setInt16(at + 4, values[i] as number);
      at += 6;
    }
    this.at = at;
    return this.done(from);
  }

  /** bytea[] (or text[] of UTF-8 bytes, with `oid` OID.text) of values[0..n); null elements are NULL. */
  bytes(values: readonly (Buffer | null)[], n: number, oid: number = OID.bytea): Buffer {
    let hasNull = false;
    for (let i = 0; i < n; i++) if (values[i] === null) hasNull = true;
    const from = this.header(oid, n, hasNull);
    const v = this.view;
    const buf = this.buf;
    let at = this.at;
    for (let i = 0; i < n; i++) {
      const b = values[i] as Buffer | null;
      if (b === null) {
        v.setInt32(at, -1);
        at += 4;
      } else {
        v.setInt32(at, b.length);
        buf.set(b, at + 4);
        at += 4 + b.length;
      }
    }
    this.at = at;
    return this.done(from);
  }
}

function hasNaN(values: ArrayLike<number>, n: number): boolean {
  for (let i = 0; i < n; i++) {
    const x = values[i] as number;
    if (Number.isNaN(x)) return true;
  }
  return false;
}
