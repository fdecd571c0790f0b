import { EmptyFrameError, FrameTooLargeError, TruncatedFrameError } from './errors';

/** Default ceiling for one IPC frame (`ipc_max_frame_bytes`). */
export const DEFAULT_MAX_FRAME_BYTES = 1024 * 1024;

export type FrameHandler = (type: number, payload: Buffer) => void;

/**
 * Incremental frame parser.
 *
 *   frame := u32le length | u8 type | payload[length - 1]
 *
 * Bytes arrive split anywhere. Pending bytes live in `buf[off, off + len)`; the
 * buffer only grows (by doubling) to hold bytes that actually arrived, never to
 * a size a header merely declared, and a declared length over `maxFrameBytes` is
 * rejected the moment its 4 header bytes are seen.
 *
 * `onFrame` receives a view of the payload that is valid only during the call:
 * the buffer is reused. Copy what you keep.
 *
 * After a throw the parser is poisoned (the stream is out of sync): the owner
 * closes the connection.
 */
export class FrameParser {
  private buf: Buffer = Buffer.alloc(0);
  private off = 0;
  private len = 0;
  private failed = false;
  /** Frames emitted so far. */
  frames = 0;

  /**
   * The largest frame accepted from now on. A connection may raise it once the
   * peer is authenticated (small frames before, the normal maximum after); it
   * applies from the next header read, also within the chunk being parsed.
   */
  maxFrameBytes: number;

  constructor(
    maxFrameBytes: number,
    private readonly onFrame: FrameHandler,
  ) {
    this.maxFrameBytes = maxFrameBytes;
  }

  /** Bytes held of a frame that is not complete yet. */
  get pendingBytes(): number {
    return this.len;
  }

  push(chunk: Buffer): void {
    if (this.failed) return;
    let buf: Buffer;
    let off: number;
    let end: number;
    if (this.len === 0) {
      // Fast path: parse straight out of the chunk, no copy.
      buf = chunk;
      off = 0;
      end = chunk.length;
    } else {
      this.merge(chunk);
      buf = this.buf;
      off = this.off;
      end = this.off + this.len;
    }
    try {
      while (end - off >= 4) {
        const length = buf.readUInt32LE(off);
        if (length > this.maxFrameBytes) throw new FrameTooLargeError(length, this.maxFrameBytes);
        if (length === 0) throw new EmptyFrameError();
        if (end - off - 4 < length) break;
        const type = buf[off + 4] as number;
        const payload = buf.subarray(off + 5, off + 4 + length);
        off += 4 + length;
        this.frames++;
        this.onFrame(type, payload);
      }
    } catch (err) {
      this.failed = true;
      this.len = 0;
      throw err;
    }
    const rest = end - off;
    if (rest === 0) {
      this.off = 0;
      this.len = 0;
    } else if (buf === chunk) {
      // Keep the tail of the chunk; copy it because the caller may reuse chunk memory.
      this.ensureCapacity(rest);
      chunk.copy(this.buf, 0, off, end);
      this.off = 0;
      this.len = rest;
    } else {
      this.off = off;
      this.len = rest;
    }
  }

  /** Call when the stream ends: a partial frame left over is an error. */
  end(): void {
    if (!this.failed && this.len > 0) {
      const pending = this.len;
      this.len = 0;
      this.failed = true;
      throw new TruncatedFrameError(pending);
    }
  }

  private ensureCapacity(n: number): void {
    if (this.buf.length >= n) return;
    let size = Math.max(this.buf.length * 2, 4096);
    while (size < n) size *= 2;
    this.buf = Buffer.allocUnsafe(size);
  }

  /** Append chunk after the pending bytes, compacting or growing (doubling) as needed. */
  private merge(chunk: Buffer): void {
    const need = this.len + chunk.length;
    if (this.off + need <= this.buf.length) {
      chunk.copy(this.buf, this.off + this.len);
    } else if (need <= this.buf.length) {
      this.buf.copy(this.buf, 0, this.off, this.off + this.len);
      this.off = 0;
      chunk.copy(this.buf, this.len);
    } else {
      let size = this.buf.length * 2;
      while (size < need) size *= 2;
      const next = Buffer.allocUnsafe(size);
      this.buf.copy(next, 0, this.off, this.off + this.len);
      chunk.copy(next, this.len);
      this.buf = next;
      this.off = 0;
    }
    this.len = need;
  }
}

/** Encode one frame from a type and a payload (a copy; for hot paths use Writer.frame). */
export function encodeFrame(type: number, payload: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(5 + payload.length);
  out.writeUInt32LE(payload.length + 1, 0);
  out[4] = type;
  out.set(payload, 5);
  return out;
}
