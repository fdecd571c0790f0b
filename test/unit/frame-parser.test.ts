import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FrameParser, MessageType, TruncatedFrameError, encodeFrame, encodeSnapshot, messageTypeName } from '@apm-sidecar/proto';
import { decodeAny, prng, sampleFrames } from './proto-fixtures';

const MAX = 1024 * 1024;

interface Got {
  type: number;
  payload: Buffer;
}

/** A parser that keeps a copy of every payload it emits. */
function collector(max = MAX): { parser: FrameParser; got: Got[] } {
  const got: Got[] = [];
  const parser = new FrameParser(max, (type, payload) => got.push({ type, payload: Buffer.from(payload) }));
  return { parser, got };
}

function feed(chunks: Buffer[]): Got[] {
  const { parser, got } = collector();
  for (const c of chunks) parser.push(c);
  assert.equal(parser.pendingBytes, 0);
  parser.end();
  return got;
}

const samples = sampleFrames();
const stream = Buffer.concat(samples.map((s) => s.frame));
const expectedFrames: Got[] = samples.map((s) => ({ type: s.type, payload: s.frame.subarray(5) }));

/** Same frames as the samples, byte for byte, and each decodes to its sample's value. */
function assertSameMessages(got: Got[], where: string): void {
  assert.equal(got.length, samples.length, `frame count (${where})`);
  for (let i = 0; i < samples.length; i++) {
    const g = got[i] as Got;
    const e = expectedFrames[i] as Got;
    assert.equal(g.type, e.type, `type of frame ${i} (${where})`);
    assert.ok(g.payload.equals(e.payload), `payload of frame ${i} (${where})`);
  }
}

function assertDecodesToSamples(got: Got[], where: string): void {
  for (let i = 0; i < samples.length; i++) {
    const g = got[i] as Got;
    assert.deepStrictEqual(decodeAny(g.type, g.payload), (samples[i] as (typeof samples)[number]).expected, `decoded frame ${i} (${where})`);
  }
}

describe('FrameParser', () => {
  it('encodes a sample of every message type that decodes back to its source value', () => {
    const types = new Set(samples.map((s) => s.type));
    for (const code of Object.values(MessageType)) assert.ok(types.has(code), `sample of ${messageTypeName(code)}`);
    // Splitting it is only meaningful if every frame decodes back to its source value.
    assertDecodesToSamples(expectedFrames, 'encoded');
  });

  it('emits the same messages when the stream arrives in one chunk', () => {
    const got = feed([stream]);
    assertSameMessages(got, 'one chunk');
    assertDecodesToSamples(got, 'one chunk');
  });

  it('emits the same messages when the stream is split into two chunks at every offset', () => {
    for (let i = 0; i <= stream.length; i++) {
      const got = feed([stream.subarray(0, i), stream.subarray(i)]);
      assertSameMessages(got, `split at ${i}`);
      assertDecodesToSamples(got, `split at ${i}`);
    }
  });

  it('emits the same messages when the stream is split into three chunks at sampled offset pairs', () => {
    const rnd = prng(42);
    const pairs: [number, number][] = [];
    // Every pair on a coarse grid, plus random pairs and pairs close together.
    for (let i = 0; i <= stream.length; i += 97) for (let j = i; j <= stream.length; j += 89) pairs.push([i, j]);
    for (let n = 0; n < 1500; n++) {
      const a = Math.floor(rnd() * (stream.length + 1));
      const b = Math.floor(rnd() * (stream.length + 1));
      pairs.push([Math.min(a, b), Math.max(a, b)]);
      const c = Math.floor(rnd() * (stream.length - 8));
      pairs.push([c, c + 1 + Math.floor(rnd() * 8)]);
    }
    for (const [i, j] of pairs) {
      const got = feed([stream.subarray(0, i), stream.subarray(i, j), stream.subarray(j)]);
      assertSameMessages(got, `split at ${i} and ${j}`);
      assertDecodesToSamples(got, `split at ${i} and ${j}`);
    }
  });

  it('emits the same messages when the stream arrives one byte at a time', () => {
    const chunks: Buffer[] = [];
    for (let i = 0; i < stream.length; i++) chunks.push(stream.subarray(i, i + 1));
    const got = feed(chunks);
    assertSameMessages(got, 'one byte at a time');
    assertDecodesToSamples(got, 'one byte at a time');
  });

  it('emits the same messages for random chunk sizes that straddle several frames of a long stream', () => {
    // Long enough that held bytes must be compacted and the buffer grown, not just appended to.
    const copies = 5;
    const long = Buffer.concat(Array.from({ length: copies }, () => stream));
    for (let seed = 1; seed <= 60; seed++) {
      const rnd = prng(seed);
      const chunks: Buffer[] = [];
      for (let i = 0; i < long.length; ) {
        const r = rnd();
        const n = 1 + Math.floor(rnd() * (r < 0.4 ? 16 : r < 0.8 ? 1500 : 6000));
        chunks.push(long.subarray(i, i + n));
        i += n;
      }
      const got = feed(chunks);
      assert.equal(got.length, copies * samples.length);
      for (let c = 0; c < copies; c++) {
        const part = got.slice(c * samples.length, (c + 1) * samples.length);
        assertSameMessages(part, `seed ${seed} copy ${c}`);
        assertDecodesToSamples(part, `seed ${seed} copy ${c}`);
      }
    }
  });

  it('does not depend on chunk memory after push returns (the caller may reuse it)', () => {
    for (const size of [1, 3, 7, 64, 1000]) {
      const { parser, got } = collector();
      const scratch = Buffer.alloc(size);
      for (let i = 0; i < stream.length; i += size) {
        const n = Math.min(size, stream.length - i);
        stream.copy(scratch, 0, i, i + n);
        parser.push(scratch.subarray(0, n));
        scratch.fill(0xee);
      }
      parser.end();
      assertSameMessages(got, `scratch of ${size}`);
    }
  });

  it('payload copies taken in the callback stay correct after later pushes', () => {
    // Views are only valid during the callback; copies must survive the buffer's reuse.
    const copies: Got[] = [];
    const parser = new FrameParser(MAX, (type, payload) => copies.push({ type, payload: Buffer.from(payload) }));
    for (let i = 0; i < stream.length; i += 13) parser.push(stream.subarray(i, Math.min(i + 13, stream.length)));
    parser.end();
    // Push the stream again, so every internal buffer is overwritten, then check the first copies.
    for (let i = 0; i < stream.length; i += 5) parser.push(stream.subarray(i, Math.min(i + 5, stream.length)));
    assert.equal(copies.length, 2 * samples.length);
    assertSameMessages(copies.slice(0, samples.length), 'first pass copies');
    assertDecodesToSamples(copies.slice(0, samples.length), 'first pass copies');
    assertSameMessages(copies.slice(samples.length), 'second pass copies');
  });

  it('reassembles a frame larger than its internal buffer when it arrives in pieces', () => {
    const big = { ts: 1, kind: 'heap', data: { blob: 'x'.repeat(70_000), list: Array.from({ length: 500 }, (_, i) => i) } };
    const frame = encodeSnapshot(big);
    const both = Buffer.concat([frame, samples[0]?.frame as Buffer, frame]);
    for (const size of [1, 100, 4095, 4096, 4097, 8191, 65_536]) {
      const { parser, got } = collector();
      for (let i = 0; i < both.length; i += size) parser.push(both.subarray(i, i + size));
      parser.end();
      assert.equal(got.length, 3, `chunks of ${size}`);
      assert.deepStrictEqual(decodeAny(got[0]?.type as number, got[0]?.payload as Buffer), { type: 'Snapshot', body: big });
      assert.deepStrictEqual(decodeAny(got[1]?.type as number, got[1]?.payload as Buffer), samples[0]?.expected);
      assert.ok(got[2]?.payload.equals(frame.subarray(5)), `chunks of ${size}`);
    }
  });

  it('emits a frame of length 1 (type byte only) with an empty payload', () => {
    const { parser, got } = collector();
    parser.push(Buffer.concat([encodeFrame(200, Buffer.alloc(0)), encodeFrame(201, Buffer.from([1, 2, 3]))]));
    assert.deepStrictEqual(
      got.map((g) => [g.type, [...g.payload]]),
      [
        [200, []],
        [201, [1, 2, 3]],
      ],
    );
  });

  it('accepts a frame whose declared length equals the maximum', () => {
    const { parser, got } = collector(64);
    const payload = Buffer.alloc(63, 7);
    parser.push(encodeFrame(6, payload));
    assert.equal(got.length, 1);
    assert.ok(got[0]?.payload.equals(payload));
  });

  it('counts the frames it has emitted', () => {
    const { parser } = collector();
    assert.equal(parser.frames, 0);
    parser.push(stream.subarray(0, 100));
    const partial = parser.frames;
    parser.push(stream.subarray(100));
    assert.ok(partial < samples.length);
    assert.equal(parser.frames, samples.length);
  });

  describe('pendingBytes', () => {
    it('is 0 before anything arrives and after whole frames', () => {
      const { parser } = collector();
      assert.equal(parser.pendingBytes, 0);
      parser.push(stream);
      assert.equal(parser.pendingBytes, 0);
    });

    it('counts header bytes and payload bytes of an incomplete frame', () => {
      const frame = encodeFrame(6, Buffer.from('0123456789'));
      const { parser, got } = collector();
      parser.push(frame.subarray(0, 3));
      assert.equal(parser.pendingBytes, 3);
      parser.push(frame.subarray(3, 5));
      assert.equal(parser.pendingBytes, 5);
      parser.push(frame.subarray(5, 12));
      assert.equal(parser.pendingBytes, 12);
      assert.equal(got.length, 0);
      parser.push(frame.subarray(12));
      assert.equal(parser.pendingBytes, 0);
      assert.equal(got.length, 1);
    });

    it('counts only the tail after the frames a chunk completes', () => {
      const a = encodeFrame(9, Buffer.alloc(8, 1));
      const b = encodeFrame(9, Buffer.alloc(8, 2));
      const { parser, got } = collector();
      parser.push(Buffer.concat([a, b.subarray(0, 6)]));
      assert.equal(got.length, 1);
      assert.equal(parser.pendingBytes, 6);
      parser.push(Buffer.concat([b.subarray(6), a, b.subarray(0, 2)]));
      assert.equal(got.length, 3);
      assert.equal(parser.pendingBytes, 2);
    });
  });

  describe('end()', () => {
    it('returns quietly when no bytes are pending, and the parser keeps working', () => {
      const { parser, got } = collector();
      parser.end();
      parser.push(stream);
      parser.end();
      assert.equal(got.length, samples.length);
      parser.push(samples[0]?.frame as Buffer);
      assert.equal(got.length, samples.length + 1);
    });

    it('throws TruncatedFrameError carrying the pending byte count when a frame is incomplete', () => {
      const frame = samples[3]?.frame as Buffer;
      for (const cut of [1, 3, 4, 5, frame.length - 1]) {
        const { parser } = collector();
        parser.push(frame.subarray(0, cut));
        assert.throws(
          () => parser.end(),
          (err: unknown) => err instanceof TruncatedFrameError && err.code === 'ERR_FRAME_TRUNCATED' && err.pendingBytes === cut,
        );
        assert.equal(parser.pendingBytes, 0);
      }
    });

    it('leaves the parser closed after a truncation: later bytes are ignored and end() is quiet', () => {
      const { parser, got } = collector();
      parser.push(stream.subarray(0, 10));
      assert.throws(() => parser.end(), TruncatedFrameError);
      parser.push(stream);
      assert.equal(got.length, 0);
      assert.equal(parser.pendingBytes, 0);
      assert.doesNotThrow(() => parser.end());
    });
  });
});
