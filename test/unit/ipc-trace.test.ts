// The binary Trace message of IPC protocol 3 (proto/src/ipc/trace.ts): it carries every field a
// ProfilePack had as JSON, survives any split, enforces the same limits, and every malformed body is
// ERR_MALFORMED_MESSAGE; a protocol-2 JSON body is refused.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  FrameParser,
  MalformedMessageError,
  MessageType,
  type ProfilePack,
  Writer,
  decodeShimMessage,
  decodeTrace,
  encodeTrace,
  traceFromObject,
} from '@apm-sidecar/proto';
import { onlyApmErrors, split } from '../helpers/fuzz-ipc';
import { throwsCode } from '../helpers/throws-code';

const full: ProfilePack = {
  txid: 'a1b2c3d4e5f60718',
  traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
  spanId: '00f067aa0ba902b7',
  parentSpanId: '53995c3f42cd8ad8',
  name: 'POST /pay',
  startTime: 1_700_000_000_123.5,
  durationMs: 42.25,
  error: 'Error: card declined',
  steps: [
    { type: 'sql', text: 'SELECT * FROM carts WHERE id = $1', durationMs: 3.5, offsetMs: 1.25 },
    { type: 'http', text: 'POST https://payments.example/authorize — ¥ € 😀', durationMs: 20, offsetMs: 5 },
  ],
};

const payload = (m: ProfilePack): Buffer => {
  const f = encodeTrace(m);
  assert.equal(f[4], MessageType.Trace);
  assert.equal(f.readUInt32LE(0), f.length - 4);
  return f.subarray(5);
};

/** A body written field by field, as a hostile or buggy shim could. */
function body(o: {
  startTime?: number;
  durationMs?: number;
  flags?: number;
  steps?: [number, number][];
  lengths: number[];
  text: string;
  textBytes?: Buffer;
}): Buffer {
  const w = new Writer(256);
  w.f64(o.startTime ?? 0)
    .f64(o.durationMs ?? 0)
    .u8(o.flags ?? 0)
    .varint((o.steps ?? []).length);
  for (const [d, off] of o.steps ?? []) w.f64(d).f64(off);
  for (const n of o.lengths) w.varint(n);
  if (o.textBytes !== undefined) w.varint(o.textBytes.length).bytes(o.textBytes);
  else w.str(o.text);
  return w.body();
}

const malformed = (p: Buffer, what: string, re?: RegExp): void => {
  const err = throwsCode(() => decodeTrace(p), MalformedMessageError, 'ERR_MALFORMED_MESSAGE', what);
  if (re !== undefined) assert.match(err.message, re, what);
};

describe('IPC Trace (binary, protocol 3)', () => {
  it('round-trips every field, optional ones present and absent, unicode included', () => {
    assert.deepEqual(decodeTrace(payload(full)), full);
    const bare: ProfilePack = { txid: 't', traceId: '', spanId: 's', name: '', startTime: 0, durationMs: 0, steps: [] };
    const back = decodeTrace(payload(bare));
    assert.deepEqual(back, bare);
    assert.ok(!('parentSpanId' in back) && !('error' in back), 'absent optional fields stay absent');
    assert.deepEqual(decodeShimMessage(MessageType.Trace, payload(full)), { type: 'Trace', body: full });
  });

  it('any ProfilePack with well-formed strings round-trips, through a parser fed in any split', () => {
    const text = (max: number) => fc.string({ unit: 'binary', maxLength: max });
    const num = fc.double({ noNaN: true, noDefaultInfinity: true });
    const traceArb = fc.record(
      {
        txid: text(64),
        traceId: text(64),
        spanId: text(64),
        parentSpanId: text(100),
        name: text(200),
        startTime: num,
        durationMs: num,
        error: text(100),
        steps: fc.array(fc.record({ type: text(64), text: text(200), durationMs: num, offsetMs: num }, { noNullPrototype: true }), { maxLength: 8 }),
      },
      { requiredKeys: ['txid', 'traceId', 'spanId', 'name', 'startTime', 'durationMs', 'steps'], noNullPrototype: true },
    );
    fc.assert(
      fc.property(fc.array(traceArb, { minLength: 1, maxLength: 4 }), fc.array(fc.nat(), { maxLength: 10 }), (traces, cuts) => {
        const got: unknown[] = [];
        const parser = new FrameParser(1 << 20, (type, p) => got.push(decodeShimMessage(type, p).body));
        for (const chunk of split(Buffer.concat(traces.map(encodeTrace)), cuts)) parser.push(chunk);
        assert.deepEqual(got, traces);
      }),
      { numRuns: 300 },
    );
  });

  it('is smaller than the JSON body it replaces, and the upstream JSON validator accepts what it decodes', () => {
    const p = payload(full);
    assert.ok(p.length < Buffer.byteLength(JSON.stringify(full)), `${p.length} B`);
    assert.deepEqual(traceFromObject(JSON.parse(JSON.stringify(decodeTrace(p)))), full);
  });

  it('a lone surrogate arrives as U+FFFD (UTF-8 cannot carry it); the other strings are unaffected', () => {
    const m: ProfilePack = { ...full, name: 'a\ud800b', steps: [] };
    const back = decodeTrace(payload(m));
    assert.equal(back.name, 'a\ufffdb');
    assert.equal(back.txid, full.txid);
    assert.equal(back.error, full.error);
  });

  it('every truncation and a trailing byte are ERR_MALFORMED_MESSAGE', () => {
    const p = payload(full);
    for (let n = 0; n < p.length; n++) malformed(p.subarray(0, n), `first ${n} bytes`);
    malformed(Buffer.concat([p, Buffer.of(0)]), 'trailing byte', /trailing/);
  });

  it('non-finite numbers are refused, naming the field', () => {
    const ok = { lengths: [1, 1, 1, 1, 1, 1], steps: [[1, 2]] as [number, number][], text: 'abcdef' };
    assert.equal(decodeTrace(body(ok)).steps[0]?.type, 'e');
    malformed(body({ ...ok, startTime: Number.NaN }), 'startTime NaN', /trace\.startTime/);
    malformed(body({ ...ok, durationMs: Number.POSITIVE_INFINITY }), 'durationMs ∞', /trace\.durationMs/);
    malformed(body({ ...ok, steps: [[Number.NaN, 0]] }), 'step durationMs', /steps\[0\]\.durationMs/);
    malformed(body({ ...ok, steps: [[0, Number.NEGATIVE_INFINITY]] }), 'step offsetMs', /steps\[0\]\.offsetMs/);
  });

  it('strings over their field’s limit are refused: ids 64, name 1024, step type 64, texts 64 KiB', () => {
    const big = (n: number) => 'x'.repeat(n);
    const five = (lens: number[]) => lens.reduce((s, n) => s + big(n), '');
    for (const [what, lengths, re] of [
      ['txid', [65, 0, 0, 0], /trace\.txid longer than 64/],
      ['traceId', [0, 65, 0, 0], /trace\.traceId longer than 64/],
      ['spanId', [0, 0, 65, 0], /trace\.spanId longer than 64/],
      ['name', [0, 0, 0, 1025], /trace\.name longer than 1024/],
    ] as const) {
      malformed(body({ lengths: [...lengths], text: five([...lengths]) }), what, re);
      // One less is accepted.
      const under = lengths.map((n) => (n > 0 ? n - 1 : 0));
      assert.doesNotThrow(() => decodeTrace(body({ lengths: under, text: five(under) })), what);
    }
    malformed(body({ steps: [[0, 0]], lengths: [0, 0, 0, 0, 65, 0], text: big(65) }), 'step type', /steps\[0\]\.type longer than 64/);
    malformed(body({ steps: [[0, 0]], lengths: [0, 0, 0, 0, 0, 65537], text: big(65537) }), 'step text', /steps\[0\]\.text longer than 65536/);
    malformed(body({ flags: 2, lengths: [0, 0, 0, 0, 65537], text: big(65537) }), 'error', /trace\.error longer than 65536/);
    malformed(body({ flags: 1, lengths: [0, 0, 0, 65537, 0], text: big(65537) }), 'parentSpanId', /trace\.parentSpanId longer than 65536/);
  });

  it('lengths that do not add up to the text, unknown flags and a step count past the end are refused', () => {
    malformed(body({ lengths: [1, 1, 1, 1], text: 'abc' }), 'lengths over the text', /declare 4 characters, the text has 3/);
    malformed(body({ lengths: [1, 1, 1, 0], text: 'abcd' }), 'lengths under the text', /declare 3 characters/);
    // Invalid UTF-8 decodes to U+FFFD, one character for three bytes: the lengths no longer match.
    malformed(body({ lengths: [3, 0, 0, 0], text: '', textBytes: Buffer.from([0xe2, 0x82, 0x28]) }), 'invalid UTF-8');
    malformed(body({ flags: 4, lengths: [0, 0, 0, 0], text: '' }), 'unknown flag', /flags 4/);
    const w = new Writer(64);
    w.f64(0)
      .f64(0)
      .u8(0)
      .varint(2 ** 40);
    malformed(w.body(), 'huge step count', /declares 1099511627776 steps/);
  });

  it('a protocol-2 JSON trace body is ERR_MALFORMED_MESSAGE, and a hostile mutation of a genuine one only ever raises ApmError', () => {
    malformed(Buffer.from(JSON.stringify(full)), 'JSON body');
    const p = payload(full);
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }), (edits) => {
        const b = Buffer.from(p);
        for (const [at, v] of edits) b[at % b.length] = v;
        onlyApmErrors(() => decodeTrace(b));
      }),
      { numRuns: 2000 },
    );
  });
});
