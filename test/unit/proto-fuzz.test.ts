// Property tests (fast-check) for the frame parser and the message decoders:
// hostile bytes only ever raise ApmError, valid messages survive any split,
// and declared lengths never drive an allocation or a long loop.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  type ApmError,
  type EventPack,
  FrameParser,
  type Hello,
  LIMITS,
  MessageType,
  type MetricKindCode,
  type MetricPoint,
  type MetricsMessage,
  PROTOCOL_VERSION,
  type Series,
  Writer,
  decodeMetrics,
  decodeShimMessage,
  encodeBtRegistration,
  encodeEvent,
  encodeHeartbeat,
  encodeHello,
  encodeMetrics,
  encodeSeries,
  writeMetricsHeader,
} from '@apm-sidecar/proto';
import { cutsArb, hostileStreamArb, onlyApmErrors, split } from '../helpers/fuzz-ipc';
import { decodeAny, metricsView, point, sketchOf } from './proto-fixtures';

const MAX = 64 * 1024;
const NUM_RUNS = 500;
/**
 * Bounds a run that has found a failure and is shrinking large inputs (that can
 * take minutes); fast-check still reports the failure. Not a timing assertion:
 * a passing run takes about a second.
 */
const RUN_BOUNDS = { interruptAfterTimeLimit: 30_000 };

// ---------------------------------------------------------------------------
// (b) valid messages

/** JSON text: any code point, plus lone surrogates (JSON escapes them). */
const jsonText = (max: number, min = 0) =>
  fc.string({
    unit: fc.oneof(
      { weight: 8, arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }) },
      fc.constantFrom('\ud800', '\udfff', '"', '\\', '\u0000'),
    ),
    minLength: min,
    maxLength: max,
  });
/** Doubles JSON keeps exactly (-0 becomes 0 in JSON). */
const jsonDouble = fc.double({ noNaN: true, noDefaultInfinity: true }).map((v) => v + 0);
const finite = fc.double({ noNaN: true, noDefaultInfinity: true });

const helloArb: fc.Arbitrary<Hello> = fc.record(
  {
    v: fc.constant(PROTOCOL_VERSION),
    app: jsonText(100),
    pid: fc.maxSafeNat(),
    shimVersion: jsonText(30),
    instanceId: jsonText(60, 1),
    secret: jsonText(64, 32),
    seq: fc.integer({ min: 0, max: 2 ** 48 - 1 }),
    host: jsonText(40),
    runtime: jsonText(40),
  },
  { requiredKeys: ['v', 'app', 'pid', 'shimVersion', 'instanceId', 'secret', 'seq'], noNullPrototype: true },
);

const eventArb: fc.Arbitrary<EventPack> = fc.record(
  {
    ts: jsonDouble,
    type: jsonText(100),
    message: jsonText(200),
    attributes: fc
      .uniqueArray(
        fc.tuple(fc.oneof(jsonText(20), fc.constantFrom('__proto__', 'constructor', 'toString')), fc.oneof(jsonText(20), jsonDouble, fc.boolean())),
        { selector: (t) => t[0], maxLength: 8 },
      )
      .map((entries) => Object.fromEntries(entries) as Record<string, string | number | boolean>),
  },
  { requiredKeys: ['ts', 'type', 'message'], noNullPrototype: true },
);

/** Text the binary series encoding keeps exactly: well-formed unicode. */
const seriesText = (min: number, max: number) => fc.string({ unit: 'binary', minLength: min, maxLength: max });
const tagsArb = fc
  .uniqueArray(
    fc.tuple(fc.oneof({ weight: 6, arbitrary: seriesText(1, 40) }, fc.constantFrom('__proto__', 'constructor', 'hasOwnProperty')), seriesText(0, 60)),
    { selector: (t) => t[0], maxLength: LIMITS.tagCount },
  )
  .map((entries) => Object.fromEntries(entries) as Record<string, string>);

const pointArb: fc.Arbitrary<MetricPoint> = fc.oneof(
  fc
    .record({
      kind: fc.constantFrom<MetricKindCode>(0, 1),
      name: seriesText(1, 64),
      tags: tagsArb,
      count: fc.maxSafeNat(),
      sum: finite,
      a: finite,
      b: finite,
      last: finite,
    })
    .map(({ kind, name, tags, count, sum, a, b, last }) =>
      point(kind, name, tags, { count, sum, min: Math.min(a, b), max: Math.max(a, b), ...(kind === 1 ? { last } : {}) }),
    ),
  fc
    .record({
      name: seriesText(1, 64),
      tags: tagsArb,
      values: fc.array(fc.oneof(fc.double({ min: -1e15, max: 1e15, noNaN: true }), fc.constantFrom(0, -0, 1e-12, 1, 1e15)), { maxLength: 60 }),
    })
    .map(({ name, tags, values }) => {
      const s = sketchOf(values);
      return point(2, name, tags, { count: s.count, sum: s.sum, min: s.min, max: s.max, sketch: s });
    }),
);

const metricsArb: fc.Arbitrary<MetricsMessage> = fc.record(
  {
    seq: fc.integer({ min: 0, max: 2 ** 48 - 1 }),
    ts: fc.double({ min: 0, noNaN: true, noDefaultInfinity: true }),
    windowMs: fc.maxSafeNat(),
    points: fc.array(pointArb, { maxLength: 6 }),
  },
  { noNullPrototype: true },
);

type Valid = { frame: Buffer; expected: unknown };
const validArb: fc.Arbitrary<Valid> = fc.oneof(
  helloArb.map((m) => ({ frame: encodeHello(m), expected: { type: 'Hello', body: m } })),
  eventArb.map((m) => ({ frame: encodeEvent(m), expected: { type: 'Event', body: m } })),
  metricsArb.map((m) => ({ frame: encodeMetrics(m), expected: { type: 'Metrics', body: metricsView(m) } })),
  fc
    .record({ seq: fc.integer({ min: 0, max: 2 ** 48 - 1 }), name: jsonText(50, 1), ts: jsonDouble }, { noNullPrototype: true })
    .map((m) => ({ frame: encodeBtRegistration(m), expected: { type: 'BtRegistration', body: m } })),
  fc.double().map((ts) => ({ frame: encodeHeartbeat(ts), expected: { type: 'Heartbeat', body: ts } })),
);

// ---------------------------------------------------------------------------

describe('proto fuzz', () => {
  it('random bytes in random splits only ever raise ApmError from the parser and the decoders', () => {
    fc.assert(
      fc.property(hostileStreamArb, cutsArb, (stream, cuts) => {
        const cache = new Map<string, Series>();
        const parser = new FrameParser(MAX, (type, payload) => {
          onlyApmErrors(() => decodeAny(type, payload));
          onlyApmErrors(() => decodeShimMessage(type, payload, cache));
        });
        let failed = false;
        for (const chunk of split(stream, cuts)) {
          if (onlyApmErrors(() => parser.push(chunk)) !== undefined) {
            failed = true;
            break;
          }
        }
        const endErr = onlyApmErrors(() => parser.end());
        if (failed) assert.equal(endErr, undefined, 'a poisoned parser does not throw again');
        assert.equal(parser.pendingBytes, 0);
      }),
      { numRuns: NUM_RUNS * 4, ...RUN_BOUNDS },
    );
  });

  it('valid hello, event, metrics, registration and heartbeat messages decode back equal after any split', () => {
    fc.assert(
      fc.property(fc.array(validArb, { minLength: 1, maxLength: 6 }), cutsArb, (msgs, cuts) => {
        const stream = Buffer.concat(msgs.map((m) => m.frame));
        const cache = new Map<string, Series>();
        const decoded: unknown[] = [];
        const parser = new FrameParser(MAX, (type, payload) => {
          const m = decodeShimMessage(type, payload, cache);
          decoded.push(m.type === 'Metrics' ? { type: 'Metrics', body: metricsView(m.body) } : m);
        });
        for (const chunk of split(stream, cuts)) parser.push(chunk);
        parser.end();
        assert.deepStrictEqual(
          decoded,
          msgs.map((m) => m.expected),
        );
      }),
      { numRuns: NUM_RUNS, ...RUN_BOUNDS },
    );
  });

  it('tags named like Object.prototype members survive a metrics round trip', () => {
    const tags = Object.fromEntries([
      ['__proto__', 'p'],
      ['constructor', 'c'],
      ['toString', 't'],
    ]);
    const m: MetricsMessage = { seq: 1, ts: 0, windowMs: 0, points: [point(0, 'c', tags, { count: 1, sum: 1, min: 1, max: 1 })] };
    const got = decodeMetrics(encodeMetrics(m).subarray(5));
    assert.deepStrictEqual(Object.entries(got.points[0]?.series.tags ?? {}), Object.entries(tags));
    assert.equal(Object.getPrototypeOf(got.points[0]?.series.tags), Object.prototype, 'the decoded tags did not change their prototype');
  });

  it('a header declaring up to 2^32 - 1 bytes is rejected above the maximum and otherwise only waits, holding just the bytes that arrived', () => {
    const declaredArb = fc.oneof(
      fc.integer({ min: MAX + 1, max: 0xffffffff }),
      fc.integer({ min: 1, max: MAX }),
      fc.constantFrom(1, 2, MAX - 1, MAX, MAX + 1, 0xffffffff),
    );
    fc.assert(
      fc.property(declaredArb, fc.uint8Array({ maxLength: 64 }), cutsArb, (declared, tailArr, cuts) => {
        const header = Buffer.alloc(4);
        header.writeUInt32LE(declared, 0);
        // Fewer bytes than declared follow, so no frame can complete.
        const tail = Buffer.from(tailArr).subarray(0, declared - 1);
        const stream = Buffer.concat([header, tail]);
        let emitted = 0;
        const parser = new FrameParser(MAX, () => emitted++);
        let err: ApmError | undefined;
        let before = 0;
        let after = 0;
        for (const chunk of split(stream, cuts)) {
          before = after;
          after += chunk.length;
          err = onlyApmErrors(() => parser.push(chunk));
          if (err !== undefined) break;
        }
        assert.equal(emitted, 0);
        if (declared > MAX) {
          assert.equal(err?.code, 'ERR_FRAME_TOO_LARGE');
          assert.ok(before < 4 && after >= 4, `thrown by the push that completed the header (bytes ${before}..${after})`);
          assert.equal(parser.pendingBytes, 0);
        } else {
          assert.equal(err, undefined);
          assert.equal(parser.pendingBytes, stream.length);
          // The parser's own buffer is sized by what arrived, not by what was declared.
          const held = (parser as unknown as { buf: Buffer }).buf;
          assert.ok(Buffer.isBuffer(held));
          assert.ok(held.length <= 4096, `holds ${held.length} bytes for ${stream.length} received`);
          assert.equal(onlyApmErrors(() => parser.end())?.code, 'ERR_FRAME_TRUNCATED');
        }
      }),
      { numRuns: NUM_RUNS, ...RUN_BOUNDS },
    );
  });

  it('a metrics payload claiming a huge point count, bucket count, string length, tag count or zero count is rejected as malformed', () => {
    const hugeArb = fc.oneof(
      fc.integer({ min: 1000, max: Number.MAX_SAFE_INTEGER }),
      fc.constantFrom(LIMITS.pointsPerFrame + 1, 2 ** 32 - 1, 2 ** 32, Number.MAX_SAFE_INTEGER),
    );
    const lieArb = fc.constantFrom('points', 'buckets', 'negBuckets', 'nameLength', 'tagLength', 'seriesLength', 'tagCount', 'zeroCount');
    fc.assert(
      fc.property(lieArb, hugeArb, fc.uint8Array({ maxLength: 32 }), (lie, huge, filler) => {
        const w = new Writer();
        writeMetricsHeader(w, 1, 0, 1000, lie === 'points' ? huge : 1);
        if (lie === 'points') {
          w.bytes(filler);
        } else {
          let series: Buffer;
          if (lie === 'nameLength') series = new Writer().u8(2).varint(huge).bytes(filler).body();
          else if (lie === 'tagLength') series = new Writer().u8(2).str('h').varint(1).varint(huge).bytes(filler).body();
          else if (lie === 'tagCount') series = new Writer().u8(2).str('h').varint(huge).bytes(filler).body();
          else series = encodeSeries(2, 'h', { a: 'b' });
          w.varint(lie === 'seriesLength' ? huge : series.length).bytes(series);
          w.varint(1).f64(1).f64(1).f64(1);
          if (lie === 'buckets') w.varint(0).varint(huge).zigzag(0).bytes(filler);
          else if (lie === 'negBuckets') w.varint(0).varint(1).zigzag(0).varint(1).varint(huge).zigzag(0).bytes(filler);
          else if (lie === 'zeroCount') w.varint(huge).varint(0).varint(0);
          else w.varint(1).varint(0).varint(0);
        }
        const payload = w.body();
        const err = onlyApmErrors(() => decodeShimMessage(MessageType.Metrics, payload));
        assert.equal(err?.code, 'ERR_MALFORMED_MESSAGE', `${lie} = ${huge}`);
      }),
      { numRuns: NUM_RUNS, ...RUN_BOUNDS },
    );
  });
});
