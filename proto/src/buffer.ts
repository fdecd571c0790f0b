import { MalformedMessageError } from './errors';

/** Bytes of the frame header: u32le length (of what follows) + u8 type. */
export const FRAME_HEADER_BYTES = 5;

/**
 * Serializer with the frame header reserved up front: the body is written after
 * it and the length is filled in by `frame()` (as pg-protocol's Writer.flush).
 * The buffer grows by doubling and is reused across frames.
 */
export class Writer {
  private buf: Buffer;
  private pos = FRAME_HEADER_BYTES;

  constructor(initialSize = 1024) {
    this.buf = Buffer.allocUnsafe(Math.max(initialSize, 64));
  }

  /** Bytes of body written so far. */
  get length(): number {
    return this.pos - FRAME_HEADER_BYTES;
  }

  private ensure(n: number): void {
    const need = this.pos + n;
    if (need <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < need) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  u8(v: number): this {
    this.ensure(1);
    this.buf[this.pos++] = v;
    return this;
  }

  u32(v: number): this {
    this.ensure(4);
    this.buf.writeUInt32LE(v, this.pos);
    this.pos += 4;
    return this;
  }

  /** Unsigned integer below 2^48 (sequence numbers). */
  u48(v: number): this {
    this.ensure(6);
    this.buf.writeUIntLE(v, this.pos, 6);
    this.pos += 6;
    return this;
  }

  f64(v: number): this {
    this.ensure(8);
    this.buf.writeDoubleLE(v, this.pos);
    this.pos += 8;
    return this;
  }

  /** LEB128 for non-negative integers up to 2^53. */
  varint(v: number): this {
    this.ensure(10);
    while (v >= 0x80) {
      this.buf[this.pos++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    this.buf[this.pos++] = v;
    return this;
  }

  /** Signed integer, zig-zag then LEB128. Safe for |v| < 2^52. */
  zigzag(v: number): this {
    return this.varint(v >= 0 ? v * 2 : -v * 2 - 1);
  }

  str(s: string): this {
    const n = Buffer.byteLength(s, 'utf8');
    this.varint(n);
    this.ensure(n);
    this.buf.write(s, this.pos, n, 'utf8');
    this.pos += n;
    return this;
  }

  bytes(b: Uint8Array): this {
    this.ensure(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
    return this;
  }

  /** Finish a frame of `type`: fill the header, return a right-sized copy, reset for the next one. */
  frame(type: number): Buffer {
    const out = Buffer.allocUnsafe(this.pos);
    this.buf.writeUInt32LE(this.pos - 4, 0);
    this.buf[4] = type;
    this.buf.copy(out, 0, 0, this.pos);
    this.pos = FRAME_HEADER_BYTES;
    return out;
  }

  /** The body written so far, without a header (a copy). */
  body(): Buffer {
    const out = Buffer.from(this.buf.subarray(FRAME_HEADER_BYTES, this.pos));
    this.pos = FRAME_HEADER_BYTES;
    return out;
  }

  reset(): void {
    this.pos = FRAME_HEADER_BYTES;
  }
}

/**
 * Bounds-checked reader over a view. Every read checks what remains first, so a
 * hostile length never makes it read past the end or allocate by a declared size.
 */
export class Reader {
  pos: number;
  readonly end: number;

  constructor(
    readonly buf: Buffer,
    start = 0,
    end = buf.length,
  ) {
    this.pos = start;
    this.end = end;
  }

  get remaining(): number {
    return this.end - this.pos;
  }

  private need(n: number, what: string): void {
    if (this.end - this.pos < n) throw new MalformedMessageError(`truncated ${what}`);
  }

  u8(): number {
    this.need(1, 'u8');
    return this.buf[this.pos++] as number;
  }

  u32(): number {
    this.need(4, 'u32');
    const v = this.buf.readUInt32LE(this.pos);
    this.pos += 4;
    return v;
  }

  u48(): number {
    this.need(6, 'u48');
    const v = this.buf.readUIntLE(this.pos, 6);
    this.pos += 6;
    return v;
  }

  f64(): number {
    this.need(8, 'f64');
    const v = this.buf.readDoubleLE(this.pos);
    this.pos += 8;
    return v;
  }

  varint(): number {
    let result = 0;
    let mul = 1;
    for (let i = 0; i < 8; i++) {
      this.need(1, 'varint');
      const b = this.buf[this.pos++] as number;
      result += (b & 0x7f) * mul;
      if (b < 0x80) {
        if (result > Number.MAX_SAFE_INTEGER) throw new MalformedMessageError('varint exceeds 2^53');
        return result;
      }
      mul *= 0x80;
    }
    throw new MalformedMessageError('varint longer than 8 bytes');
  }

  zigzag(): number {
    const z = this.varint();
    return z % 2 === 0 ? z / 2 : -(z + 1) / 2;
  }

  str(): string {
    const n = this.varint();
    this.need(n, 'string');
    const s = this.buf.toString('utf8', this.pos, this.pos + n);
    this.pos += n;
    return s;
  }

  /** A view (not a copy) of the next n bytes. */
  view(n: number): Buffer {
    this.need(n, 'bytes');
    const v = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }

  expectEnd(what: string): void {
    if (this.pos !== this.end) throw new MalformedMessageError(`${this.end - this.pos} trailing bytes after ${what}`);
  }
}
