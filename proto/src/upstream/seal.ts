import { createCipheriv, createDecipheriv } from 'node:crypto';
import { MalformedMessageError } from '../errors';
import { FrameGapError, ReplayError, TamperedFrameError } from './errors';
import type { Nacl, SessionKeys } from './handshake';
import { UpstreamType } from './types';

/**
 * Sealing of upstream frames with the two session keys.
 *
 * One counter per direction, shared by both keys, starting at 1. The nonce is
 * the direction byte then the counter, so a nonce never repeats under a key:
 *
 *   secretbox nonce (24) = dir | 0 × 15 | counter u64be
 *   chacha nonce    (12) = dir | 0 × 3  | counter u64be      AAD = type | counter
 *
 * The receiver accepts only the next counter, last + 1: a counter not greater
 * than the last is ERR_REPLAY (replay, reorder), a greater one ERR_FRAME_GAP
 * (frames lost on the way; checked after authentication, so a forged counter is
 * ERR_TAMPERED). A frame that fails authentication is ERR_TAMPERED. A failed
 * frame never moves the receiver.
 */
export const Direction = { AgentToCollector: 1, CollectorToAgent: 2 } as const;
export type DirectionCode = (typeof Direction)[keyof typeof Direction];

const COUNTER_BYTES = 8;
const TAG_BYTES = 16;
export const SEAL_OVERHEAD = 5 + COUNTER_BYTES + TAG_BYTES + 1;

function writeCounter(buf: Buffer, offset: number, n: number): void {
  buf.writeUInt32BE(Math.floor(n / 0x1_0000_0000), offset);
  buf.writeUInt32BE(n >>> 0, offset + 4);
}

function readCounter(buf: Buffer, offset: number): number {
  return buf.readUInt32BE(offset) * 0x1_0000_0000 + buf.readUInt32BE(offset + 4);
}

/** What both ends of one direction hold: the keys, the last counter and the two nonces (their counter bytes rewritten per frame). */
abstract class SealState {
  protected counter = 0;
  private readonly textNonce = Buffer.alloc(24);
  private readonly numNonce = Buffer.alloc(12);

  constructor(
    protected readonly nacl: Nacl,
    protected readonly keys: SessionKeys,
    dir: DirectionCode,
  ) {
    this.textNonce[0] = dir;
    this.numNonce[0] = dir;
  }

  /** Counter of the last frame sealed or opened (0: none yet). */
  get last(): number {
    return this.counter;
  }

  protected textNonceFor(n: number): Buffer {
    writeCounter(this.textNonce, 16, n);
    return this.textNonce;
  }

  protected numNonceFor(n: number): Buffer {
    writeCounter(this.numNonce, 4, n);
    return this.numNonce;
  }
}

export class Sealer extends SealState {
  /** Seal `inner | body` under the text key. Returns the whole frame. */
  text(inner: number, body: Uint8Array): Buffer {
    const n = ++this.counter;
    const plain = new Uint8Array(1 + body.length);
    plain[0] = inner;
    plain.set(body, 1);
    const boxed = this.nacl.secretbox(plain, this.textNonceFor(n), this.keys.textKey);
    const frame = Buffer.allocUnsafe(5 + COUNTER_BYTES + boxed.length);
    frame.writeUInt32LE(frame.length - 4, 0);
    frame[4] = UpstreamType.Text;
    writeCounter(frame, 5, n);
    frame.set(boxed, 5 + COUNTER_BYTES);
    return frame;
  }

  /** Seal `inner | body` under the numeric key (ChaCha20-Poly1305). Returns the whole frame. */
  numeric(inner: number, body: Uint8Array): Buffer {
    const n = ++this.counter;
    const frame = Buffer.allocUnsafe(5 + COUNTER_BYTES + 1 + body.length + TAG_BYTES);
    frame.writeUInt32LE(frame.length - 4, 0);
    frame[4] = UpstreamType.Numeric;
    writeCounter(frame, 5, n);
    const c = createCipheriv('chacha20-poly1305', this.keys.numericKey, this.numNonceFor(n), { authTagLength: TAG_BYTES });
    c.setAAD(frame.subarray(4, 5 + COUNTER_BYTES), { plaintextLength: 1 + body.length });
    let off = 5 + COUNTER_BYTES;
    off += c.update(Buffer.of(inner)).copy(frame, off);
    off += c.update(body).copy(frame, off);
    c.final();
    c.getAuthTag().copy(frame, off);
    return frame;
  }
}

export interface Opened {
  counter: number;
  inner: number;
  body: Buffer;
}

export class Opener extends SealState {
  /** Open a sealed frame (type Text or Numeric). Throws ERR_TAMPERED, ERR_REPLAY, ERR_FRAME_GAP or ERR_MALFORMED_MESSAGE. */
  open(type: number, payload: Buffer): Opened {
    if (payload.length < COUNTER_BYTES + TAG_BYTES + 1) throw new MalformedMessageError('sealed frame too short');
    const counter = readCounter(payload, 0);
    if (counter <= this.counter) throw new ReplayError(counter, this.counter);
    let plain: Buffer;
    if (type === UpstreamType.Text) {
      const opened = this.nacl.secretbox.open(payload.subarray(COUNTER_BYTES), this.textNonceFor(counter), this.keys.textKey);
      if (opened === null) throw new TamperedFrameError('text');
      plain = Buffer.from(opened.buffer, opened.byteOffset, opened.byteLength);
    } else if (type === UpstreamType.Numeric) {
      const d = createDecipheriv('chacha20-poly1305', this.keys.numericKey, this.numNonceFor(counter), { authTagLength: TAG_BYTES });
      const aad = Buffer.allocUnsafe(1 + COUNTER_BYTES);
      aad[0] = type;
      payload.copy(aad, 1, 0, COUNTER_BYTES);
      d.setAAD(aad, { plaintextLength: payload.length - COUNTER_BYTES - TAG_BYTES });
      d.setAuthTag(payload.subarray(payload.length - TAG_BYTES));
      const head = d.update(payload.subarray(COUNTER_BYTES, payload.length - TAG_BYTES));
      try {
        d.final();
      } catch {
        throw new TamperedFrameError('numeric');
      }
      plain = head;
    } else {
      throw new MalformedMessageError(`frame type ${type} is not sealed`);
    }
    if (plain.length < 1) throw new MalformedMessageError('sealed frame without an inner type');
    if (counter !== this.counter + 1) throw new FrameGapError(counter, this.counter + 1);
    this.counter = counter;
    return { counter, inner: plain[0] as number, body: plain.subarray(1) };
  }
}
