// One test per error code (and, for ERR_MALFORMED_MESSAGE, one per way a
// payload can be malformed). Every assertion checks the class, that it is an
// ApmError, and the stable `code`.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  ApmError,
  EmptyFrameError,
  FrameParser,
  FrameTooLargeError,
  LIMITS,
  MalformedMessageError,
  MessageType,
  PROTOCOL_VERSION,
  ProtocolVersionError,
  Reader,
  SKETCH_MAX_KEY,
  SKETCH_MIN_KEY,
  type Sketch,
  TruncatedFrameError,
  UnexpectedMessageError,
  UnknownMessageTypeError,
  Writer,
  decodeAck,
  decodeActiveStack,
  decodeBtRegistration,
  decodeControlResult,
  decodeEvent,
  decodeHeartbeat,
  decodeHello,
  decodeMetrics,
  decodeShimMessage,
  decodeSnapshot,
  decodeWelcome,
  encodeAck,
  encodeBtRegistration,
  encodeFrame,
  encodeHeartbeat,
  encodeMetrics,
  encodeSeries,
  messageTypeName,
  peekSeq,
  writeMetricsHeader,
  writePoint,
} from '@apm-sidecar/proto';
import { histogramPoint, point, sketchOf } from './proto-fixtures';
import { throwsCode } from '../helpers/throws-code';

type ErrorClass = new (...args: never[]) => ApmError;

const malformed = (fn: () => unknown, what = ''): MalformedMessageError => throwsCode(fn, MalformedMessageError, 'ERR_MALFORMED_MESSAGE', what);

const json = (v: unknown): Buffer => Buffer.from(JSON.stringify(v));
const goodHello = { v: PROTOCOL_VERSION, app: 'a', pid: 1, shimVersion: '0.1.0', instanceId: 'i-1', secret: 's'.repeat(32), seq: 0 };

/** A metrics payload with one point of `seriesBytes`; `extra` is written after the point statistics. */
function metricsPayload(
  seriesBytes: Buffer,
  stats: { count?: number; sum?: number; min?: number; max?: number; last?: number; sketch?: Sketch | null } = {},
): Buffer {
  const w = new Writer();
  writeMetricsHeader(w, 1, 1000, 10_000, 1);
  writePoint(w, seriesBytes, stats.count ?? 1, stats.sum ?? 1, stats.min ?? 1, stats.max ?? 1, stats.last ?? 1, stats.sketch ?? null);
  return w.body();
}

/** Series bytes written by hand, so they can break the rules encodeSeries follows. */
function rawSeries(kind: number, name: string, tags: [string, string][], trailing = 0): Buffer {
  const w = new Writer();
  w.u8(kind).str(name).varint(tags.length);
  for (const [k, v] of tags) w.str(k).str(v);
  for (let i = 0; i < trailing; i++) w.u8(0);
  return w.body();
}

describe('proto errors', () => {
  it('every error class is an ApmError and an Error whose name is its class name', () => {
    const errors: [ApmError, ErrorClass][] = [
      [new FrameTooLargeError(2, 1), FrameTooLargeError],
      [new EmptyFrameError(), EmptyFrameError],
      [new TruncatedFrameError(3), TruncatedFrameError],
      [new UnknownMessageTypeError(99), UnknownMessageTypeError],
      [new MalformedMessageError('x'), MalformedMessageError],
      [new ProtocolVersionError(2, 1), ProtocolVersionError],
      [new UnexpectedMessageError('x'), UnexpectedMessageError],
    ];
    const codes = new Set<string>();
    for (const [err, cls] of errors) {
      assert.ok(err instanceof ApmError);
      assert.ok(err instanceof Error);
      assert.equal(err.name, cls.name);
      assert.match(err.code, /^ERR_[A-Z_]+$/);
      assert.ok(typeof err.stack === 'string');
      codes.add(err.code);
    }
    assert.equal(codes.size, errors.length, 'codes are distinct');
  });

  it('ERR_FRAME_TOO_LARGE: rejects a declared length over the maximum as soon as its 4 header bytes arrive, then ignores the stream', () => {
    const emitted: number[] = [];
    const parser = new FrameParser(1024, (type) => emitted.push(type));
    parser.push(encodeHeartbeat(1)); // a good frame first: the check applies mid-stream too
    assert.deepStrictEqual(emitted, [MessageType.Heartbeat]);
    const header = Buffer.alloc(4);
    header.writeUInt32LE(1025, 0);
    parser.push(header.subarray(0, 2));
    assert.equal(parser.pendingBytes, 2, 'two header bytes alone are not enough to judge');
    const err = throwsCode(() => parser.push(header.subarray(2)), FrameTooLargeError, 'ERR_FRAME_TOO_LARGE');
    assert.equal(err.declared, 1025);
    assert.equal(err.max, 1024);
    // Poisoned: nothing held, nothing emitted, no further errors.
    assert.equal(parser.pendingBytes, 0);
    parser.push(encodeHeartbeat(2));
    parser.push(Buffer.alloc(4)); // would be ERR_FRAME_EMPTY on a live parser
    assert.deepStrictEqual(emitted, [MessageType.Heartbeat]);
    assert.equal(parser.frames, 1);
    parser.end();

    // Only the header, in one push, of a length up to 2^32 - 1.
    const huge = Buffer.from([0xff, 0xff, 0xff, 0xff]);
    const e2 = throwsCode(() => new FrameParser(1024 * 1024, () => undefined).push(huge), FrameTooLargeError, 'ERR_FRAME_TOO_LARGE');
    assert.equal(e2.declared, 0xffffffff);
  });

  it('ERR_FRAME_EMPTY: rejects a frame declaring length 0, then ignores the stream', () => {
    const emitted: number[] = [];
    const parser = new FrameParser(1024, (type) => emitted.push(type));
    throwsCode(() => parser.push(Buffer.concat([encodeAck(1), Buffer.alloc(4), encodeAck(2)])), EmptyFrameError, 'ERR_FRAME_EMPTY');
    assert.deepStrictEqual(emitted, [MessageType.Ack]);
    parser.push(encodeAck(3));
    assert.deepStrictEqual(emitted, [MessageType.Ack]);

    const split = new FrameParser(1024, () => undefined);
    split.push(Buffer.alloc(3));
    throwsCode(() => split.push(Buffer.alloc(1)), EmptyFrameError, 'ERR_FRAME_EMPTY', 'split header');
  });

  it('ERR_FRAME_TRUNCATED: end() with part of a frame pending reports how many bytes were held', () => {
    const frame = encodeAck(5);
    const parser = new FrameParser(1024, () => undefined);
    parser.push(Buffer.concat([frame, frame.subarray(0, frame.length - 1)]));
    const err = throwsCode(() => parser.end(), TruncatedFrameError, 'ERR_FRAME_TRUNCATED');
    assert.equal(err.pendingBytes, frame.length - 1);
  });

  it('ERR_UNKNOWN_MESSAGE_TYPE: a type byte no message uses, or one a shim never sends, is rejected with the type', () => {
    for (const type of [0, 17, 99, 255]) {
      const e1 = throwsCode(() => messageTypeName(type), UnknownMessageTypeError, 'ERR_UNKNOWN_MESSAGE_TYPE', `name ${type}`);
      assert.equal(e1.type, type);
      const e2 = throwsCode(() => decodeShimMessage(type, json({})), UnknownMessageTypeError, 'ERR_UNKNOWN_MESSAGE_TYPE', `decode ${type}`);
      assert.equal(e2.type, type);
    }
    // Sidecar → shim and CLI types are known names but not shim messages.
    for (const type of [MessageType.Welcome, MessageType.StateChange, MessageType.Ack, MessageType.StatusRequest, MessageType.Control, MessageType.Error]) {
      assert.equal(typeof messageTypeName(type), 'string');
      throwsCode(() => decodeShimMessage(type, encodeAck(1).subarray(5)), UnknownMessageTypeError, 'ERR_UNKNOWN_MESSAGE_TYPE', `shim decode ${type}`);
    }
  });

  it('ERR_PROTOCOL_VERSION: a hello with another protocol version is rejected with that version', () => {
    for (const v of [0, 1, 2, PROTOCOL_VERSION + 1, 255]) {
      const err = throwsCode(() => decodeShimMessage(MessageType.Hello, json({ ...goodHello, v })), ProtocolVersionError, 'ERR_PROTOCOL_VERSION', `v=${v}`);
      assert.equal(err.version, v);
    }
    // Checked before the other fields: another version may send a different hello shape.
    throwsCode(() => decodeHello(json({ v: PROTOCOL_VERSION + 1 })), ProtocolVersionError, 'ERR_PROTOCOL_VERSION');
    // A version 1 hello (no secret) is refused as a version, not as a malformed v2 one.
    throwsCode(() => decodeHello(json({ v: 1, app: 'a', pid: 1, shimVersion: 'x', instanceId: 'i' })), ProtocolVersionError, 'ERR_PROTOCOL_VERSION');
  });

  it('ERR_UNEXPECTED_MESSAGE: UnexpectedMessageError carries its code and message', () => {
    const err = new UnexpectedMessageError('metrics before hello');
    assert.equal(err.code, 'ERR_UNEXPECTED_MESSAGE');
    assert.equal(err.message, 'metrics before hello');
  });

  describe('ERR_MALFORMED_MESSAGE', () => {
    it('rejects a JSON-bodied message whose body is not JSON', () => {
      for (const body of ['', '{', '{"v":1,}', 'nope', '\u0000', '{"v":1}x']) {
        for (const type of [MessageType.Hello, MessageType.ActiveStack, MessageType.Event, MessageType.Snapshot]) {
          malformed(() => decodeShimMessage(type, Buffer.from(body)), `type ${type} body ${JSON.stringify(body)}`);
        }
      }
      malformed(() => decodeShimMessage(MessageType.Hello, Buffer.from([0xff, 0xfe, 0x7b])), 'invalid utf-8');
    });

    it('rejects a JSON body that is not an object', () => {
      for (const body of ['[]', '[1,2]', 'null', '1', '"hello"', 'true']) {
        malformed(() => decodeShimMessage(MessageType.Hello, Buffer.from(body)), body);
        malformed(() => decodeShimMessage(MessageType.Event, Buffer.from(body)), body);
      }
    });

    it('rejects fields of the wrong type or out of range', () => {
      const cases: [string, () => unknown][] = [
        ['hello.pid string', () => decodeHello(json({ ...goodHello, pid: '1' }))],
        ['hello.pid negative', () => decodeHello(json({ ...goodHello, pid: -1 }))],
        ['hello.pid fractional', () => decodeHello(json({ ...goodHello, pid: 1.5 }))],
        ['hello.v string', () => decodeHello(json({ ...goodHello, v: '1' }))],
        ['hello.app number', () => decodeHello(json({ ...goodHello, app: 7 }))],
        ['hello.app missing', () => decodeHello(json({ v: PROTOCOL_VERSION, pid: 1, shimVersion: 'x', instanceId: 'i', secret: 's'.repeat(32), seq: 0 }))],
        ['hello.secret missing', () => decodeHello(json({ ...goodHello, secret: undefined }))],
        ['hello.secret too short', () => decodeHello(json({ ...goodHello, secret: 's'.repeat(31) }))],
        ['hello.secret too long', () => decodeHello(json({ ...goodHello, secret: 's'.repeat(129) }))],
        ['hello.seq missing', () => decodeHello(json({ ...goodHello, seq: undefined }))],
        ['hello.seq beyond u48', () => decodeHello(json({ ...goodHello, seq: 2 ** 48 }))],
        ['hello.app too long', () => decodeHello(json({ ...goodHello, app: 'a'.repeat(257) }))],
        ['hello.instanceId empty', () => decodeHello(json({ ...goodHello, instanceId: '' }))],
        ['hello.host number', () => decodeHello(json({ ...goodHello, host: 1 }))],
        [
          'welcome.state unknown',
          () => decodeWelcome(json({ state: 'dancing', settings: { flushMs: 1, maxFrameBytes: 1 }, ackedSeq: 0, agentId: 'a', sidecarVersion: 'v' })),
        ],
        ['welcome.settings null', () => decodeWelcome(json({ state: 'active', settings: null, ackedSeq: 0, agentId: 'a', sidecarVersion: 'v' }))],
        [
          'welcome.settings.flushMs string',
          () => decodeWelcome(json({ state: 'active', settings: { flushMs: '1', maxFrameBytes: 1 }, ackedSeq: 0, agentId: 'a', sidecarVersion: 'v' })),
        ],
        ['activeStack.frames with a number', () => decodeActiveStack(json({ txid: 't', name: 'n', ts: 0, elapsedMs: 0, frames: ['a', 1] }))],
        ['event.attributes array', () => decodeEvent(json({ ts: 0, type: 't', message: 'm', attributes: ['a'] }))],
        ['event.attributes nested object', () => decodeEvent(json({ ts: 0, type: 't', message: 'm', attributes: { a: { b: 1 } } }))],
        ['event.attributes null value', () => decodeEvent(json({ ts: 0, type: 't', message: 'm', attributes: { a: null } }))],
        ['snapshot.data missing', () => decodeSnapshot(json({ ts: 0, kind: 'k' }))],
        ['controlResult.ok string', () => decodeControlResult(json({ ok: 'yes', message: '' }))],
        ['btRegistration.name empty', () => decodeBtRegistration(encodeBtRegistration({ seq: 1, name: '', ts: 0 }).subarray(5))],
        ['btRegistration.ts string', () => decodeBtRegistration(Buffer.concat([Buffer.alloc(6), json({ name: 'n', ts: '0' })]))],
      ];
      for (const [what, fn] of cases) malformed(fn, what);
    });

    it('rejects every truncation of a metrics payload', () => {
      const payload = encodeMetrics({
        seq: 9,
        ts: 1_700_000_000_000,
        windowMs: 10_000,
        points: [
          point(0, 'c', { a: '1', b: '2' }, { count: 3, sum: 3, min: 1, max: 1 }),
          point(1, 'g', {}, { count: 1, sum: 5, min: 5, max: 5, last: 5 }),
          histogramPoint('h', { x: 'y' }, [-2, 0, 0.5, 1, 300, 300, 1e9]),
        ],
      }).subarray(5);
      assert.equal(decodeMetrics(payload).points.length, 3);
      for (let n = 0; n < payload.length; n++)
        malformed(() => decodeShimMessage(MessageType.Metrics, payload.subarray(0, n)), `first ${n} of ${payload.length} bytes`);
    });

    it('rejects snapshot data nested deeper than LIMITS.jsonDepth, which could not be serialized again', () => {
      const nested = (depth: number): string => {
        let s = '1';
        for (let i = 0; i < depth; i++) s = i % 2 === 0 ? `[${s}]` : `{"k":${s}}`;
        return s;
      };
      const snapshot = (data: string): Buffer => Buffer.from(`{"ts":1,"kind":"k","data":${data}}`);
      assert.equal(decodeSnapshot(snapshot('"scalar"')).data, 'scalar');
      const atLimit = decodeSnapshot(snapshot(nested(LIMITS.jsonDepth))).data;
      assert.equal(JSON.stringify(atLimit), nested(LIMITS.jsonDepth));
      malformed(() => decodeSnapshot(snapshot(nested(LIMITS.jsonDepth + 1))), 'one level too deep');
      // Deep enough that JSON.stringify of the decoded value would throw RangeError.
      const deep = `${'['.repeat(200_000)}${']'.repeat(200_000)}`;
      assert.match(malformed(() => decodeShimMessage(MessageType.Snapshot, snapshot(deep))).message, /nests deeper/);
    });

    it('rejects truncated fixed-size payloads: heartbeat, ack, btRegistration seq, peekSeq', () => {
      for (let n = 0; n < 8; n++) malformed(() => decodeHeartbeat(Buffer.alloc(n)), `heartbeat ${n}`);
      for (let n = 0; n < 6; n++) {
        malformed(() => decodeAck(Buffer.alloc(n)), `ack ${n}`);
        malformed(() => decodeBtRegistration(Buffer.alloc(n)), `bt ${n}`);
        malformed(() => peekSeq(Buffer.alloc(n)), `peekSeq ${n}`);
      }
    });

    it('rejects trailing bytes after a heartbeat, an ack, a metrics payload or a series', () => {
      malformed(() => decodeHeartbeat(Buffer.concat([encodeHeartbeat(1).subarray(5), Buffer.from([0])])));
      malformed(() => decodeAck(Buffer.concat([encodeAck(1).subarray(5), Buffer.from([0])])));
      const metrics = encodeMetrics({ seq: 1, ts: 0, windowMs: 0, points: [point(0, 'c', {}, { count: 1, sum: 1, min: 1, max: 1 })] }).subarray(5);
      malformed(() => decodeMetrics(Buffer.concat([metrics, Buffer.from([0])])), 'metrics');
      malformed(() => decodeMetrics(metricsPayload(rawSeries(0, 'c', [['a', 'b']], 1))), 'series');
    });

    it('rejects a histogram whose sketch holds a different number of values than the point declares', () => {
      const s = sketchOf([1, 2, 3, 0, -1]);
      const series = encodeSeries(2, 'h', {});
      assert.equal(decodeMetrics(metricsPayload(series, { count: 5, sum: 5, min: -1, max: 3, sketch: s })).points[0]?.count, 5);
      for (const count of [0, 4, 6, 1000])
        malformed(() => decodeMetrics(metricsPayload(series, { count, sum: 5, min: -1, max: 3, sketch: s })), `count ${count}`);
    });

    it('rejects sketch buckets with keys out of range or more buckets than bytes left', () => {
      const series = encodeSeries(2, 'h', {});
      const withBuckets = (write: (w: Writer) => void): Buffer => {
        const w = new Writer();
        writeMetricsHeader(w, 1, 0, 0, 1);
        w.varint(series.length).bytes(series).varint(1).f64(1).f64(1).f64(1);
        write(w);
        return w.body();
      };
      malformed(
        () =>
          decodeMetrics(
            withBuckets((w) =>
              w
                .varint(0)
                .varint(1)
                .zigzag(SKETCH_MAX_KEY + 1)
                .varint(1)
                .varint(0),
            ),
          ),
        'key above max',
      );
      malformed(
        () =>
          decodeMetrics(
            withBuckets((w) =>
              w
                .varint(0)
                .varint(1)
                .zigzag(SKETCH_MIN_KEY - 1)
                .varint(1)
                .varint(0),
            ),
          ),
        'key below min',
      );
      malformed(() => decodeMetrics(withBuckets((w) => w.varint(0).varint(2).zigzag(SKETCH_MAX_KEY).varint(1).varint(0).varint(0))), 'range past max');
      malformed(() => decodeMetrics(withBuckets((w) => w.varint(0).varint(1_000_000).zigzag(0).varint(1))), 'more buckets than bytes');
    });

    it('rejects tag keys that are not sorted or are duplicated', () => {
      assert.deepStrictEqual(
        decodeMetrics(
          metricsPayload(
            rawSeries(0, 'c', [
              ['a', '1'],
              ['b', '2'],
            ]),
          ),
        ).points[0]?.series.tags,
        { a: '1', b: '2' },
      );
      malformed(
        () =>
          decodeMetrics(
            metricsPayload(
              rawSeries(0, 'c', [
                ['b', '2'],
                ['a', '1'],
              ]),
            ),
          ),
        'unsorted',
      );
      malformed(
        () =>
          decodeMetrics(
            metricsPayload(
              rawSeries(0, 'c', [
                ['a', '1'],
                ['a', '2'],
              ]),
            ),
          ),
        'duplicate',
      );
    });

    it('rejects series that break the limits: unknown kind, empty or long name, too many tags, empty key, long tag', () => {
      const many = Array.from({ length: LIMITS.tagCount + 1 }, (_, i): [string, string] => [`k${String(i).padStart(3, '0')}`, 'v']);
      const cases: [string, Buffer][] = [
        ['kind 3', rawSeries(3, 'c', [])],
        ['kind 255', rawSeries(255, 'c', [])],
        ['empty name', rawSeries(0, '', [])],
        ['name over the byte limit', rawSeries(0, 'é'.repeat(LIMITS.nameBytes / 2 + 1), [])],
        ['too many tags', rawSeries(0, 'c', many)],
        ['empty tag key', rawSeries(0, 'c', [['', 'v']])],
        ['long tag key', rawSeries(0, 'c', [['k'.repeat(LIMITS.tagBytes + 1), 'v']])],
        ['long tag value', rawSeries(0, 'c', [['k', 'v'.repeat(LIMITS.tagBytes + 1)]])],
        ['empty series', Buffer.alloc(0)],
      ];
      // The same series at the limits is accepted.
      assert.equal(decodeMetrics(metricsPayload(rawSeries(0, 'n'.repeat(LIMITS.nameBytes), many.slice(1)))).points[0]?.series.name.length, LIMITS.nameBytes);
      for (const [what, series] of cases) malformed(() => decodeMetrics(metricsPayload(series)), what);
    });

    it('rejects point statistics that are not finite, min above max, a non-finite gauge or a negative window start', () => {
      const counter = encodeSeries(0, 'c', {});
      const gauge = encodeSeries(1, 'g', {});
      malformed(() => decodeMetrics(metricsPayload(counter, { sum: Number.NaN })), 'sum NaN');
      malformed(() => decodeMetrics(metricsPayload(counter, { sum: Number.POSITIVE_INFINITY })), 'sum inf');
      malformed(() => decodeMetrics(metricsPayload(counter, { min: Number.NaN })), 'min NaN');
      malformed(() => decodeMetrics(metricsPayload(counter, { max: Number.NEGATIVE_INFINITY })), 'max -inf');
      malformed(() => decodeMetrics(metricsPayload(counter, { min: 2, max: 1 })), 'min > max');
      malformed(() => decodeMetrics(metricsPayload(gauge, { last: Number.NaN })), 'gauge NaN');
      malformed(() => decodeMetrics(metricsPayload(gauge, { last: Number.POSITIVE_INFINITY })), 'gauge inf');
      for (const ts of [-1, Number.NaN, Number.POSITIVE_INFINITY]) {
        const w = new Writer();
        writeMetricsHeader(w, 1, ts, 0, 0);
        malformed(() => decodeMetrics(w.body()), `ts ${ts}`);
      }
    });

    it('rejects a point count above the limit or above the bytes left', () => {
      for (const n of [LIMITS.pointsPerFrame + 1, 2 ** 32, Number.MAX_SAFE_INTEGER]) {
        const w = new Writer();
        writeMetricsHeader(w, 1, 0, 0, n);
        w.bytes(Buffer.alloc(64));
        malformed(() => decodeMetrics(w.body()), `n ${n}`);
      }
      const w = new Writer();
      writeMetricsHeader(w, 1, 0, 0, 100);
      w.bytes(Buffer.alloc(99));
      malformed(() => decodeMetrics(w.body()), 'n above bytes left');
    });

    it('rejects a varint longer than 8 bytes or above 2^53', () => {
      const header = new Writer().u48(1).f64(0).body();
      // Nine bytes, the last one ending the varint: one byte too many even though its value (0) is small.
      const tooLong = Buffer.concat([header, Buffer.alloc(8, 0x80), Buffer.from([0, 0])]);
      assert.match(malformed(() => decodeMetrics(tooLong)).message, /varint longer than 8 bytes/);
      const tooBig = Buffer.concat([header, Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]), Buffer.from([0])]);
      assert.match(malformed(() => decodeMetrics(tooBig)).message, /exceeds 2\^53/);
      // The largest safe integer takes 8 bytes and is accepted.
      const r = new Reader(new Writer().varint(Number.MAX_SAFE_INTEGER).body());
      assert.equal(r.varint(), Number.MAX_SAFE_INTEGER);
      malformed(() => new Reader(Buffer.alloc(10, 0xff)).varint(), 'reader');
    });

    it('rejects a string whose declared length runs past the payload', () => {
      const w = new Writer();
      writeMetricsHeader(w, 1, 0, 0, 1);
      w.varint(10)
        .u8(0)
        .varint(2 ** 40)
        .bytes(Buffer.from('abc'));
      malformed(() => decodeMetrics(w.body()));
      malformed(() => new Reader(new Writer().varint(5).bytes(Buffer.from('abcd')).body()).str(), 'reader str');
    });

    it('a malformed payload is a decode error only: the parser keeps emitting the frames after it', () => {
      // A malformed message is a decode error, not a frame error: the parser keeps going.
      const seen: unknown[] = [];
      const parser = new FrameParser(1024, (type, payload) => {
        try {
          seen.push(decodeShimMessage(type, payload).type);
        } catch (err) {
          seen.push((err as ApmError).code);
        }
      });
      parser.push(Buffer.concat([encodeFrame(MessageType.Heartbeat, Buffer.alloc(3)), encodeHeartbeat(1)]));
      assert.deepStrictEqual(seen, ['ERR_MALFORMED_MESSAGE', 'Heartbeat']);
    });
  });
});
