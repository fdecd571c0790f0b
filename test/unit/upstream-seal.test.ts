// Sealing of upstream frames (proto/src/upstream/seal.ts) and the bodies of
// sealed messages (proto/src/upstream/messages.ts).
//
// Keys come from a real in-memory handshake. The tests check the round trip in
// both directions, counter nonces that never repeat, replay and reorder
// rejection, that any change to a sealed frame is a typed error, the exact
// constructions (secretbox for text, ChaCha20-Poly1305 for numeric, opened by
// hand), the inner message codecs, and a fast-check property: hostile bytes
// given to Opener.open only ever raise ApmError.
import assert from 'node:assert/strict';
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import {
  ApmError,
  MalformedMessageError,
  type MetricKindCode,
  type MetricPoint,
  type Series,
  Sketch,
  type Tags,
  Writer,
  encodeSeries,
  seriesKey,
} from '@apm-sidecar/proto';
import {
  type AccessKey,
  ClientHandshake,
  Direction,
  type DirectionCode,
  FrameGapError,
  Inner,
  Opener,
  ReplayError,
  SEAL_OVERHEAD,
  Sealer,
  ServerHandshake,
  type SessionKeys,
  TamperedFrameError,
  type TextItem,
  type UpMetricPack,
  UpstreamType,
  decodeAgentConfig,
  decodeAgentInfo,
  decodeLicense,
  decodeMetricBatch,
  decodePing,
  decodeTextBatch,
  decodeUpAck,
  decodeUpError,
  encodeAgentConfig,
  encodeAgentInfo,
  encodeLicense,
  encodeMetricBatch,
  encodePing,
  encodeTextBatch,
  encodeUpAck,
  encodeUpError,
  readClientHello,
  writeMetricPack,
} from '@apm-sidecar/proto/upstream';
import fc from 'fast-check';
import nacl from 'tweetnacl';
import { throwsCode } from '../helpers/throws-code';

// ---------------------------------------------------------------------------
// Helpers

/** Run fn, assert it throws an ApmError; return its code. */
function apmCode(fn: () => unknown, what = ''): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ApmError, `not an ApmError ${what}: ${String(err)}`);
    return err.code;
  }
  assert.fail(`expected a throw ${what}`);
}

/** Keys from a real handshake. */
function sessionKeys(): { client: SessionKeys; server: SessionKeys } {
  const key: AccessKey = { projectId: 'shop', secret: randomBytes(32) };
  const c = new ClientHandshake(nacl, key, 'agent-1');
  const s = new ServerHandshake(nacl, readClientHello(c.hello().subarray(5)), key.secret);
  const { finished, keys } = c.serverHello(s.serverHello().subarray(5));
  return { client: keys, server: s.clientFinished(finished.subarray(5)) };
}

/** Both directions of one session, as the agent and the collector set them up. */
function session() {
  const k = sessionKeys();
  return {
    keys: k.client,
    agentSealer: new Sealer(nacl, k.client, Direction.AgentToCollector),
    agentOpener: new Opener(nacl, k.client, Direction.CollectorToAgent),
    collectorSealer: new Sealer(nacl, k.server, Direction.CollectorToAgent),
    collectorOpener: new Opener(nacl, k.server, Direction.AgentToCollector),
  };
}

/** Check a sealed frame's header; return type, counter and payload. */
function parts(frame: Buffer): { type: number; counter: number; payload: Buffer } {
  assert.equal(frame.readUInt32LE(0), frame.length - 4, 'length prefix counts type + payload');
  const payload = frame.subarray(5);
  return { type: frame[4] as number, counter: Number(payload.readBigUInt64BE(0)), payload };
}

function open(opener: Opener, frame: Buffer) {
  return opener.open(frame[4] as number, frame.subarray(5));
}

const NUMERIC = UpstreamType.Numeric;
const TEXT = UpstreamType.Text;

// ---------------------------------------------------------------------------

describe('upstream seal: round trips', () => {
  const bodies: [string, Buffer][] = [
    ['empty', Buffer.alloc(0)],
    ['one byte', Buffer.of(0x42)],
    ['json', Buffer.from(JSON.stringify({ hello: 'wörld ✓' }))],
    ['64 KiB', randomBytes(64 * 1024)],
  ];

  it('text and numeric frames round-trip agent → collector and collector → agent', () => {
    const s = session();
    const pairs: [string, Sealer, Opener][] = [
      ['agent → collector', s.agentSealer, s.collectorOpener],
      ['collector → agent', s.collectorSealer, s.agentOpener],
    ];
    for (const [dir, sealer, opener] of pairs) {
      for (const [what, body] of bodies) {
        for (const kind of ['text', 'numeric'] as const) {
          const inner = kind === 'text' ? Inner.TextBatch : Inner.MetricBatch;
          const frame = sealer[kind](inner, body);
          const p = parts(frame);
          assert.equal(p.type, kind === 'text' ? TEXT : NUMERIC);
          assert.equal(p.counter, sealer.last);
          assert.equal(frame.length, body.length + SEAL_OVERHEAD, `${dir} ${kind} ${what}: overhead`);
          // The body is not in the clear.
          if (body.length >= 8) assert.equal(frame.indexOf(body.subarray(0, 8)), -1);
          const m = open(opener, frame);
          assert.equal(m.counter, p.counter);
          assert.equal(m.inner, inner);
          assert.deepEqual(m.body, body, `${dir} ${kind} ${what}`);
        }
      }
    }
  });

  it('every inner type byte survives sealing', () => {
    const s = session();
    for (let inner = 0; inner < 256; inner++) {
      const kind = inner % 2 === 0 ? 'text' : 'numeric';
      assert.equal(open(s.collectorOpener, s.agentSealer[kind](inner, Buffer.of(inner))).inner, inner);
    }
  });

  it('the sealer does not keep a reference to the body it sealed', () => {
    const s = session();
    const body = Buffer.from('abcdef');
    const t = s.agentSealer.text(Inner.TextBatch, body);
    const n = s.agentSealer.numeric(Inner.MetricBatch, body);
    body.fill(0);
    assert.equal(open(s.collectorOpener, t).body.toString(), 'abcdef');
    assert.equal(open(s.collectorOpener, n).body.toString(), 'abcdef');
  });
});

describe('upstream seal: counters and nonces', () => {
  it('over 10k frames of both kinds, counters start at 1, strictly increase, and no nonce repeats under a key', () => {
    const s = session();
    const N = 10_000;
    const counters: number[] = [];
    const textNonces = new Set<string>();
    const numNonces = new Set<string>();
    const payloads = new Set<string>();
    const body = Buffer.from('the same body every time');
    let rnd = 12345;
    for (let i = 0; i < N; i++) {
      rnd = (Math.imul(rnd, 1103515245) + 12345) >>> 0;
      const kind = rnd & 0x10000 ? 'text' : 'numeric';
      const frame = s.agentSealer[kind](Inner.Ping, body);
      const p = parts(frame);
      counters.push(p.counter);
      assert.equal(s.agentSealer.last, p.counter);
      // The nonce each side derives: direction byte, zeros, counter (big-endian) in the last 8 bytes.
      const nonce = Buffer.alloc(kind === 'text' ? 24 : 12);
      nonce[0] = Direction.AgentToCollector;
      nonce.writeBigUInt64BE(BigInt(p.counter), nonce.length - 8);
      (kind === 'text' ? textNonces : numNonces).add(nonce.toString('hex'));
      payloads.add(p.payload.subarray(8).toString('hex'));
      // And the receiver accepts every one in order.
      assert.equal(open(s.collectorOpener, frame).counter, p.counter);
    }
    assert.equal(counters[0], 1);
    for (let i = 1; i < N; i++) assert.ok((counters[i] as number) > (counters[i - 1] as number), `counter ${i}`);
    assert.equal(new Set(counters).size, N, 'all counters distinct');
    assert.equal(counters[N - 1], N, 'one counter per frame, shared by both keys');
    assert.equal(textNonces.size + numNonces.size, N, 'no nonce repeats under either key');
    assert.ok(textNonces.size > 1000 && numNonces.size > 1000, 'both kinds were exercised');
    assert.equal(payloads.size, N, 'the same body never seals to the same bytes');
  });

  it('the two directions use the same counters but different nonces', () => {
    const s = session();
    const a = parts(s.agentSealer.text(Inner.Ping, Buffer.of(1)));
    const c = parts(s.collectorSealer.text(Inner.Ping, Buffer.of(1)));
    assert.equal(a.counter, 1);
    assert.equal(c.counter, 1);
    assert.notDeepEqual(a.payload.subarray(8), c.payload.subarray(8), 'same key, same counter, same body: different direction byte');
  });
});

describe('upstream seal: replay and reorder', () => {
  for (const kind of ['text', 'numeric'] as const) {
    it(`${kind}: the same frame twice is ERR_REPLAY`, () => {
      const s = session();
      const f1 = s.agentSealer[kind](Inner.Ping, Buffer.of(1));
      open(s.collectorOpener, f1);
      const err = throwsCode(() => open(s.collectorOpener, f1), ReplayError, 'ERR_REPLAY');
      assert.match(err.message, /counter 1 is not greater than the last accepted 1/);
      // Still after later frames.
      open(s.collectorOpener, s.agentSealer[kind](Inner.Ping, Buffer.of(2)));
      throwsCode(() => open(s.collectorOpener, f1), ReplayError, 'ERR_REPLAY');
    });

    it(`${kind}: frame 2 before frame 1 is ERR_FRAME_GAP; frame 1 after frame 2 is ERR_REPLAY`, () => {
      const s = session();
      const f1 = s.agentSealer[kind](Inner.Ping, Buffer.of(1));
      const f2 = s.agentSealer[kind](Inner.Ping, Buffer.of(2));
      throwsCode(() => open(s.collectorOpener, f2), FrameGapError, 'ERR_FRAME_GAP');
      assert.equal(open(s.collectorOpener, f1).counter, 1);
      assert.equal(open(s.collectorOpener, f2).counter, 2);
      throwsCode(() => open(s.collectorOpener, f1), ReplayError, 'ERR_REPLAY');
    });
  }

  it('the counter is shared by both keys: a text frame sealed before a numeric one cannot follow it', () => {
    const s = session();
    const t = s.agentSealer.text(Inner.TextBatch, Buffer.of(1));
    const n = s.agentSealer.numeric(Inner.MetricBatch, Buffer.of(2));
    throwsCode(() => open(s.collectorOpener, n), FrameGapError, 'ERR_FRAME_GAP');
    open(s.collectorOpener, t);
    open(s.collectorOpener, n);
    throwsCode(() => open(s.collectorOpener, t), ReplayError, 'ERR_REPLAY');
  });

  for (const dir of ['agent → collector', 'collector → agent'] as const) {
    it(`${dir}: a frame whose counter skips one (a frame lost on the way) is ERR_FRAME_GAP, for either key`, () => {
      for (const kind of ['text', 'numeric'] as const) {
        const s = session();
        const [sealer, opener] = dir === 'agent → collector' ? [s.agentSealer, s.collectorOpener] : [s.collectorSealer, s.agentOpener];
        assert.equal(open(opener, sealer.text(Inner.Ping, Buffer.of(1))).counter, 1);
        const lost = sealer.numeric(Inner.MetricBatch, Buffer.of(2));
        const f3 = sealer[kind](Inner.Ack, Buffer.of(3));
        const err = throwsCode(() => open(opener, f3), FrameGapError, 'ERR_FRAME_GAP', kind);
        assert.match(err.message, /frame counter 3 is not the next one \(2\)/);
        assert.equal(opener.last, 1, 'a gap does not move the receiver');
        // Nothing later is accepted while the lost frame is missing.
        throwsCode(() => open(opener, sealer[kind](Inner.Ack, Buffer.of(4))), FrameGapError, 'ERR_FRAME_GAP', kind);
        assert.equal(open(opener, lost).counter, 2, 'the next counter still opens');
        assert.equal(open(opener, f3).counter, 3);
      }
    });
  }

  it('a frame from another session (same counter, other keys) is ERR_TAMPERED', () => {
    const a = session();
    const b = session();
    for (const kind of ['text', 'numeric'] as const) {
      const f = a.agentSealer[kind](Inner.Ping, Buffer.of(1));
      throwsCode(() => open(b.collectorOpener, f), TamperedFrameError, 'ERR_TAMPERED', kind);
    }
  });

  it('counter 0 is never accepted', () => {
    const s = session();
    const p = Buffer.from(s.agentSealer.text(Inner.Ping, Buffer.of(1)).subarray(5));
    p.fill(0, 0, 8);
    throwsCode(() => s.collectorOpener.open(TEXT, p), ReplayError, 'ERR_REPLAY');
  });
});

describe('upstream seal: tampering', () => {
  for (const kind of ['text', 'numeric'] as const) {
    it(`${kind}: every flipped bit of counter, ciphertext or tag is ERR_TAMPERED (counter bits: or ERR_REPLAY)`, () => {
      const s = session();
      // Four frames accepted first, so the fifth's counter (5) can be flipped both below and above the last.
      for (let i = 0; i < 4; i++) open(s.collectorOpener, s.agentSealer[kind](Inner.TextBatch, Buffer.of(i)));
      const frame = s.agentSealer[kind](Inner.TextBatch, Buffer.from('a body long enough to cover several bytes'));
      const { payload } = parts(frame);
      const seen = { counter: new Set<string>(), rest: new Set<string>() };
      for (let bit = 0; bit < payload.length * 8; bit++) {
        const bad = Buffer.from(payload);
        bad[bit >> 3] = (bad[bit >> 3] as number) ^ (1 << (bit & 7));
        const code = apmCode(() => s.collectorOpener.open(frame[4] as number, bad), `bit ${bit}`);
        if (bit < 64) {
          assert.ok(code === 'ERR_TAMPERED' || code === 'ERR_REPLAY', `counter bit ${bit}: ${code}`);
          seen.counter.add(code);
        } else {
          assert.equal(code, 'ERR_TAMPERED', `bit ${bit}`);
          seen.rest.add(code);
        }
      }
      assert.deepEqual([...seen.counter].sort(), ['ERR_REPLAY', 'ERR_TAMPERED'], 'counter flips below and above the last were both tried');
      // Failures do not move the receiver: the genuine frame still opens.
      assert.equal(open(s.collectorOpener, frame).counter, 5);
    });

    it(`${kind}: any truncation or extension of a sealed frame is a typed error`, () => {
      const s = session();
      const frame = s.agentSealer[kind](Inner.TextBatch, Buffer.from('body'));
      const { payload } = parts(frame);
      for (let n = 0; n < payload.length; n++) {
        const code = apmCode(() => s.collectorOpener.open(frame[4] as number, payload.subarray(0, n)), `${n} bytes`);
        assert.ok(code === 'ERR_MALFORMED_MESSAGE' || code === 'ERR_TAMPERED', `${n} bytes: ${code}`);
      }
      throwsCode(() => s.collectorOpener.open(frame[4] as number, Buffer.concat([payload, Buffer.of(0)])), TamperedFrameError, 'ERR_TAMPERED');
      throwsCode(() => s.collectorOpener.open(frame[4] as number, Buffer.alloc(0)), MalformedMessageError, 'ERR_MALFORMED_MESSAGE');
    });

    it(`${kind}: a frame sealed for the other direction is ERR_TAMPERED`, () => {
      const s = session();
      // The agent's own frame reflected back to it, and a collector frame sent to the collector.
      const f = s.agentSealer[kind](Inner.Ping, Buffer.of(1));
      throwsCode(() => open(s.agentOpener, f), TamperedFrameError, 'ERR_TAMPERED', 'reflected to the agent');
      const g = s.collectorSealer[kind](Inner.Ping, Buffer.of(1));
      throwsCode(() => open(s.collectorOpener, g), TamperedFrameError, 'ERR_TAMPERED', 'reflected to the collector');
    });
  }

  it('a text frame relabelled as numeric, or a numeric one as text, is ERR_TAMPERED', () => {
    const s = session();
    const t = s.agentSealer.text(Inner.TextBatch, Buffer.from('{"items":[]}'));
    const n = s.agentSealer.numeric(Inner.MetricBatch, Buffer.of(0));
    throwsCode(() => s.collectorOpener.open(NUMERIC, t.subarray(5)), TamperedFrameError, 'ERR_TAMPERED', 'text as numeric');
    throwsCode(() => s.collectorOpener.open(TEXT, n.subarray(5)), TamperedFrameError, 'ERR_TAMPERED', 'numeric as text');
    // Relabelling did not consume the counters.
    assert.equal(open(s.collectorOpener, t).counter, 1);
    assert.equal(open(s.collectorOpener, n).counter, 2);
  });

  it('a type byte that names no sealed frame is ERR_MALFORMED_MESSAGE', () => {
    const s = session();
    const t = s.agentSealer.text(Inner.Ping, Buffer.of(1));
    for (const type of [0, UpstreamType.ClientHello, UpstreamType.ServerHello, UpstreamType.ClientFinished, UpstreamType.HandshakeRejected, 0x32, 0xff]) {
      throwsCode(() => s.collectorOpener.open(type, t.subarray(5)), MalformedMessageError, 'ERR_MALFORMED_MESSAGE', `type ${type}`);
    }
  });
});

describe('upstream seal: the constructions, opened by hand', () => {
  it('numeric frames are ChaCha20-Poly1305: nonce = dir | 0×3 | counter, AAD = type | counter, tag last', () => {
    const s = session();
    s.agentSealer.text(Inner.Ping, Buffer.of(0)); // move the counter on, so it is not 1
    const body = Buffer.from('numeric body: metric packs');
    const frame = s.agentSealer.numeric(Inner.MetricBatch, body);
    const { payload, counter } = parts(frame);
    assert.equal(counter, 2);
    const counterBytes = payload.subarray(0, 8);
    const nonce = Buffer.concat([Buffer.of(Direction.AgentToCollector, 0, 0, 0), counterBytes]);
    const aad = Buffer.concat([Buffer.of(NUMERIC), counterBytes]);
    const ct = payload.subarray(8, payload.length - 16);
    const tag = payload.subarray(payload.length - 16);

    const d = createDecipheriv('chacha20-poly1305', s.keys.numericKey, nonce, { authTagLength: 16 });
    d.setAAD(aad, { plaintextLength: ct.length });
    d.setAuthTag(tag);
    const plain = Buffer.concat([d.update(ct), d.final()]);
    assert.deepEqual(plain, Buffer.concat([Buffer.of(Inner.MetricBatch), body]));

    // The AAD is part of it: without it, or with another type byte, authentication fails.
    for (const wrongAad of [Buffer.alloc(0), Buffer.concat([Buffer.of(TEXT), counterBytes])]) {
      const w = createDecipheriv('chacha20-poly1305', s.keys.numericKey, nonce, { authTagLength: 16 });
      w.setAAD(wrongAad, { plaintextLength: ct.length });
      w.setAuthTag(tag);
      w.update(ct);
      assert.throws(() => w.final());
    }
    // And it is under the numeric key, not the text key.
    const w = createDecipheriv('chacha20-poly1305', s.keys.textKey, nonce, { authTagLength: 16 });
    w.setAAD(aad, { plaintextLength: ct.length });
    w.setAuthTag(tag);
    w.update(ct);
    assert.throws(() => w.final());
  });

  it('a numeric frame sealed by hand with node:crypto opens with Opener', () => {
    const s = session();
    const counter = 1n;
    const counterBytes = Buffer.alloc(8);
    counterBytes.writeBigUInt64BE(counter);
    const nonce = Buffer.concat([Buffer.of(Direction.CollectorToAgent, 0, 0, 0), counterBytes]);
    const c = createCipheriv('chacha20-poly1305', s.keys.numericKey, nonce, { authTagLength: 16 });
    const plain = Buffer.from([Inner.Config, 1, 2, 3]);
    c.setAAD(Buffer.concat([Buffer.of(NUMERIC), counterBytes]), { plaintextLength: plain.length });
    const ct = Buffer.concat([c.update(plain), c.final()]);
    const payload = Buffer.concat([counterBytes, ct, c.getAuthTag()]);
    const m = s.agentOpener.open(NUMERIC, payload);
    assert.deepEqual(m, { counter: 1, inner: Inner.Config, body: Buffer.of(1, 2, 3) });
  });

  it('text frames are tweetnacl secretbox under the text key: nonce = dir | 0×15 | counter', () => {
    const s = session();
    const body = Buffer.from('{"agentId":"agent-1"}');
    const frame = s.collectorSealer.text(Inner.Config, body);
    const { payload } = parts(frame);
    const nonce = Buffer.concat([Buffer.of(Direction.CollectorToAgent), Buffer.alloc(15), payload.subarray(0, 8)]);
    const plain = nacl.secretbox.open(payload.subarray(8), nonce, s.keys.textKey);
    assert.ok(plain !== null);
    assert.deepEqual(Buffer.from(plain), Buffer.concat([Buffer.of(Inner.Config), body]));
    assert.equal(nacl.secretbox.open(payload.subarray(8), nonce, s.keys.numericKey), null, 'not under the numeric key');
  });

  it('the numeric key and the text key are different keys', () => {
    const { keys } = session();
    assert.notDeepEqual(keys.textKey, keys.numericKey);
  });
});

// ---------------------------------------------------------------------------
// Inner messages

function series(kind: MetricKindCode, name: string, tags: Tags): Series {
  return { key: seriesKey(encodeSeries(kind, name, tags)), kind, name, tags };
}

function sketchOf(values: number[]): Sketch {
  const s = new Sketch();
  for (const v of values) s.add(v);
  return s;
}

function counterPoint(name: string, tags: Tags, n: number): MetricPoint {
  return { series: series(0, name, tags), count: n, sum: n, min: 1, max: 1, last: Number.NaN, sketch: null };
}

function gaugePoint(name: string, tags: Tags, values: number[]): MetricPoint {
  return {
    series: series(1, name, tags),
    count: values.length,
    sum: values.reduce((a, b) => a + b, 0),
    min: Math.min(...values),
    max: Math.max(...values),
    last: values[values.length - 1] as number,
    sketch: null,
  };
}

function histogramPoint(name: string, tags: Tags, values: number[]): MetricPoint {
  const s = sketchOf(values);
  return { series: series(2, name, tags), count: s.count, sum: s.sum, min: s.min, max: s.max, last: Number.NaN, sketch: s };
}

/** Buckets of a store as [key, count] (sketches are compared by content, not by their arrays). */
function buckets(store: Sketch['pos']): [number, number][] {
  const out: [number, number][] = [];
  if (store.empty) return out;
  for (let k = store.lo; k <= store.hi; k++) if (store.get(k) !== 0) out.push([k, store.get(k)]);
  return out;
}

/** A pack by its fields (decoded points are objects of their own class, with the sketch built when read). */
function packView(packs: UpMetricPack[]): unknown {
  return packs.map((p) => ({
    ...p,
    points: p.points.map((pt) => ({
      series: pt.series,
      count: pt.count,
      sum: pt.sum,
      min: pt.min,
      max: pt.max,
      last: pt.last,
      sketch:
        pt.sketch === null
          ? null
          : {
              count: pt.sketch.count,
              sum: pt.sketch.sum,
              min: pt.sketch.min,
              max: pt.sketch.max,
              zero: pt.sketch.zero,
              pos: buckets(pt.sketch.pos),
              neg: buckets(pt.sketch.neg),
            },
    })),
  }));
}

function samplePacks(): UpMetricPack[] {
  return [
    {
      packId: 'agent-1:1700000000000:1',
      intervalStart: 1_700_000_000_000,
      intervalMs: 10_000,
      points: [
        counterPoint('http.requests', { method: 'GET', route: '/cart' }, 12),
        gaugePoint('heap.used', {}, [1e8, 1.5e8, 1.25e8]),
        histogramPoint('http.latency', { route: '/cart', ünï: 'çødé ✓' }, [0.5, 1, 2, 3, 5, 8, 13, 21, 340, 1e4]),
        histogramPoint('temp.delta', { zone: 'a' }, [-3.5, -0.25, 0, 0, 2, 40]),
      ],
    },
    {
      packId: 'agent-1:1700000010000:2',
      intervalStart: 1_700_000_010_000,
      intervalMs: 10_000,
      points: [counterPoint('http.requests', { method: 'GET', route: '/cart' }, 3)],
    },
    { packId: 'p', intervalStart: 0, intervalMs: 0, points: [] },
  ];
}

const origin = { app: 'checkout', instanceId: 'i-1', pid: 4242 };

function sampleItems(): TextItem[] {
  return [
    {
      kind: 'trace',
      origin,
      trace: {
        txid: 'tx-1',
        traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
        spanId: '00f067aa0ba902b7',
        parentSpanId: 'a3ce929d0e0e4736',
        name: 'POST /pay',
        startTime: 1_700_000_000_123,
        durationMs: 42.5,
        error: 'boom',
        steps: [{ type: 'sql', text: 'SELECT 1', durationMs: 3, offsetMs: 1 }],
      },
    },
    {
      kind: 'activeStack',
      origin,
      stack: { txid: 'tx-2', name: 'GET /slow', ts: 1_700_000_000_500, elapsedMs: 3000, frames: ['at a (x.js:1:1)', 'at b (y.js:2:2)'] },
    },
    { kind: 'event', origin, event: { ts: 1_700_000_000_600, type: 'deploy', message: 'v42', attributes: { ok: true, n: 3, who: 'ci' } } },
    { kind: 'snapshot', origin, snapshot: { ts: 1_700_000_000_700, kind: 'heap', data: { used: 1, nested: [1, { a: null }] } } },
    { kind: 'btRegistration', origin, name: 'POST /pay', ts: 1_700_000_000_800 },
  ];
}

describe('upstream messages: round trips', () => {
  it('metric batch', () => {
    const packs = samplePacks();
    const body = encodeMetricBatch(packs);
    assert.deepEqual(packView(decodeMetricBatch(body)), packView(packs));
    assert.deepEqual(decodeMetricBatch(encodeMetricBatch([])), []);
  });

  it('a batch built with writeMetricPack plus the count in front equals encodeMetricBatch', () => {
    const packs = samplePacks();
    const w = new Writer(256);
    for (const p of packs) writeMetricPack(w, p);
    const built = Buffer.concat([new Writer(16).varint(packs.length).body(), w.body()]);
    assert.deepEqual(built, encodeMetricBatch(packs));
  });

  it('a series cache makes repeated series decode to the same object', () => {
    const cache = new Map<string, Series>();
    const a = decodeMetricBatch(encodeMetricBatch(samplePacks()), cache);
    const b = decodeMetricBatch(encodeMetricBatch(samplePacks()), cache);
    assert.equal(a[0]?.points[0]?.series, b[1]?.points[0]?.series);
    assert.equal(cache.size, 4);
  });

  it('text batch with every item kind', () => {
    const items = sampleItems();
    assert.deepEqual(decodeTextBatch(encodeTextBatch(items)), items);
    assert.deepEqual(decodeTextBatch(encodeTextBatch([])), []);
  });

  it('agent info, config, license, error', () => {
    const info = { agentId: 'pod-abc', host: 'node-1', version: '0.1.0', apps: ['checkout', 'カート'] };
    assert.deepEqual(decodeAgentInfo(encodeAgentInfo(info)), info);
    // The agent's read timeout is optional: agents that predate it leave it out.
    assert.deepEqual(decodeAgentInfo(encodeAgentInfo({ ...info, soTimeoutMs: 60000 })), { ...info, soTimeoutMs: 60000 });
    const config = { configVersion: 3, settings: { flush_ms: 1000, enabled: true, profile: 'whatap' } };
    assert.deepEqual(decodeAgentConfig(encodeAgentConfig(config)), config);
    for (const lic of [
      { granted: true, reason: '' },
      { granted: false, reason: 'no license available (limit 2)' },
    ]) {
      assert.deepEqual(decodeLicense(encodeLicense(lic)), lic);
    }
    assert.deepEqual(decodeUpError(encodeUpError('ERR_REPLAY', 'frame counter 1 …')), { code: 'ERR_REPLAY', message: 'frame counter 1 …' });
  });

  it('ack and ping', () => {
    for (const n of [0, 1, 255, 2 ** 32, 2 ** 48 - 1]) assert.equal(decodeUpAck(encodeUpAck(n)), n);
    assert.equal(encodeUpAck(1).length, 6);
    for (const ts of [0, 1_700_000_000_000.5, -1, Number.MAX_VALUE]) assert.equal(decodePing(encodePing(ts)), ts);
    assert.equal(encodePing(1).length, 8);
  });

  it('every message survives sealing with the key its kind uses', () => {
    const s = session();
    const items = sampleItems();
    const packs = samplePacks();
    const m1 = open(s.collectorOpener, s.agentSealer.numeric(Inner.MetricBatch, encodeMetricBatch(packs)));
    assert.equal(m1.inner, Inner.MetricBatch);
    assert.deepEqual(packView(decodeMetricBatch(m1.body)), packView(packs));
    const m2 = open(s.collectorOpener, s.agentSealer.text(Inner.TextBatch, encodeTextBatch(items)));
    assert.equal(m2.inner, Inner.TextBatch);
    assert.deepEqual(decodeTextBatch(m2.body), items);
    const m3 = open(s.agentOpener, s.collectorSealer.text(Inner.Ack, encodeUpAck(m2.counter)));
    assert.equal(decodeUpAck(m3.body), 2);
    const m4 = open(s.agentOpener, s.collectorSealer.text(Inner.License, encodeLicense({ granted: true, reason: '' })));
    assert.deepEqual(decodeLicense(m4.body), { granted: true, reason: '' });
  });
});

describe('upstream messages: malformed bodies are ERR_MALFORMED_MESSAGE', () => {
  const malformed = (fn: () => unknown, what: string) => throwsCode(fn, MalformedMessageError, 'ERR_MALFORMED_MESSAGE', what);
  const json = (v: unknown) => Buffer.from(JSON.stringify(v));

  it('metric batch: every truncation, a trailing byte, and bad headers', () => {
    const body = encodeMetricBatch(samplePacks());
    for (let n = 0; n < body.length; n++) malformed(() => decodeMetricBatch(body.subarray(0, n)), `first ${n} bytes`);
    malformed(() => decodeMetricBatch(Buffer.concat([body, Buffer.of(0)])), 'trailing byte');

    const batch = (f: (w: Writer) => void) => {
      const w = new Writer(64);
      f(w);
      return w.body();
    };
    const cases: [string, Buffer][] = [
      ['more packs declared than bytes', batch((w) => w.varint(1000))],
      ['empty pack id', batch((w) => w.varint(1).str('').f64(0).varint(0).varint(0))],
      ['pack id over 256', batch((w) => w.varint(1).str('x'.repeat(257)).f64(0).varint(0).varint(0))],
      ['negative interval start', batch((w) => w.varint(1).str('p').f64(-1).varint(0).varint(0))],
      ['NaN interval start', batch((w) => w.varint(1).str('p').f64(Number.NaN).varint(0).varint(0))],
      ['infinite interval start', batch((w) => w.varint(1).str('p').f64(Number.POSITIVE_INFINITY).varint(0).varint(0))],
      ['more points declared than bytes', batch((w) => w.varint(1).str('p').f64(0).varint(0).varint(500))],
      ['varint longer than 8 bytes', Buffer.alloc(9, 0xff)],
    ];
    // Points that encode but do not hold together.
    const packWith = (pt: MetricPoint): Buffer => encodeMetricBatch([{ packId: 'p', intervalStart: 0, intervalMs: 0, points: [pt] }]);
    cases.push(['a histogram whose sketch holds 3 values, point says 4', packWith({ ...histogramPoint('lat', {}, [1, 2, 3]), count: 4 })]);
    cases.push(['min > max', packWith({ ...counterPoint('c', {}, 2), min: 5, max: 1 })]);
    cases.push(['a non-finite gauge value', packWith({ ...gaugePoint('g', {}, [1]), last: Number.NaN })]);
    for (const [what, b] of cases) malformed(() => decodeMetricBatch(b), what);
  });

  it('text batch', () => {
    const good = sampleItems()[4] as TextItem;
    const cases: [string, Buffer][] = [
      ['not JSON', Buffer.from('{items:')],
      ['a JSON array', json([])],
      ['no items', json({})],
      ['items not an array', json({ items: {} })],
      ['an item that is null', json({ items: [null] })],
      ['an item without origin', json({ items: [{ ...good, origin: undefined }] })],
      ['origin pid a string', json({ items: [{ ...good, origin: { ...origin, pid: '1' } }] })],
      ['unknown kind', json({ items: [{ ...good, kind: 'profile' }] })],
      ['trace missing', json({ items: [{ kind: 'trace', origin }] })],
      ['trace steps not an array', json({ items: [{ kind: 'trace', origin, trace: { ...(sampleItems()[0] as { trace: object }).trace, steps: 1 } }] })],
      [
        'active stack frames not strings',
        json({ items: [{ kind: 'activeStack', origin, stack: { txid: 't', name: 'n', ts: 1, elapsedMs: 1, frames: [1] } }] }),
      ],
      ['event without ts', json({ items: [{ kind: 'event', origin, event: { type: 't', message: 'm' } }] })],
      ['event attribute an object', json({ items: [{ kind: 'event', origin, event: { ts: 1, type: 't', message: 'm', attributes: { a: {} } } }] })],
      ['snapshot without data', json({ items: [{ kind: 'snapshot', origin, snapshot: { ts: 1, kind: 'k' } }] })],
      ['btRegistration name not a string', json({ items: [{ ...good, name: 1 }] })],
      ['btRegistration ts not a number', json({ items: [{ ...good, ts: '1' }] })],
    ];
    for (const [what, b] of cases) malformed(() => decodeTextBatch(b), what);
  });

  it('agent info, config, license, error', () => {
    const info = { agentId: 'a', host: 'h', version: 'v', apps: [] };
    const cases: [string, () => unknown][] = [
      ['info: not JSON', () => decodeAgentInfo(Buffer.from('nope'))],
      ['info: apps missing', () => decodeAgentInfo(json({ ...info, apps: undefined }))],
      ['info: apps with a number', () => decodeAgentInfo(json({ ...info, apps: ['a', 1] }))],
      ['info: agentId missing', () => decodeAgentInfo(json({ ...info, agentId: undefined }))],
      ['info: agentId over 256', () => decodeAgentInfo(json({ ...info, agentId: 'x'.repeat(257) }))],
      ['info: version over 64', () => decodeAgentInfo(json({ ...info, version: 'x'.repeat(65) }))],
      ['info: too many apps', () => decodeAgentInfo(json({ ...info, apps: Array.from({ length: 1025 }, () => 'a') }))],
      ['info: soTimeoutMs a string', () => decodeAgentInfo(json({ ...info, soTimeoutMs: '60000' }))],
      ['info: soTimeoutMs 0', () => decodeAgentInfo(json({ ...info, soTimeoutMs: 0 }))],
      ['info: soTimeoutMs fractional', () => decodeAgentInfo(json({ ...info, soTimeoutMs: 1.5 }))],
      ['info: soTimeoutMs over 2^31 - 1', () => decodeAgentInfo(json({ ...info, soTimeoutMs: 2 ** 31 }))],
      ['config: no configVersion', () => decodeAgentConfig(json({ settings: {} }))],
      ['config: settings an array', () => decodeAgentConfig(json({ configVersion: 1, settings: [] }))],
      ['config: settings null', () => decodeAgentConfig(json({ configVersion: 1, settings: null }))],
      ['config: a JSON string', () => decodeAgentConfig(json('config'))],
      ['license: granted a string', () => decodeLicense(json({ granted: 'yes', reason: '' }))],
      ['license: reason missing', () => decodeLicense(json({ granted: true }))],
      ['error: code missing', () => decodeUpError(json({ message: 'm' }))],
      ['error: code over 128', () => decodeUpError(json({ code: 'E'.repeat(129), message: 'm' }))],
    ];
    for (const [what, fn] of cases) malformed(fn, what);
  });

  it('ack and ping of the wrong length', () => {
    for (const n of [0, 5, 7, 12]) malformed(() => decodeUpAck(Buffer.alloc(n)), `ack of ${n} bytes`);
    for (const n of [0, 7, 9, 16]) malformed(() => decodePing(Buffer.alloc(n)), `ping of ${n} bytes`);
  });
});

describe('upstream seal: hostile bytes (fast-check)', () => {
  const ALLOWED = new Set(['ERR_TAMPERED', 'ERR_REPLAY', 'ERR_MALFORMED_MESSAGE']);

  it('random bytes given to Opener.open only ever throw ApmError subclasses', () => {
    const s = session();
    const typeArb = fc.oneof(fc.constantFrom<number>(TEXT, NUMERIC), fc.integer({ min: 0, max: 255 }));
    fc.assert(
      fc.property(
        typeArb,
        fc.uint8Array({ maxLength: 300 }),
        fc.constantFrom<DirectionCode>(Direction.AgentToCollector, Direction.CollectorToAgent),
        (type, bytes, dir) => {
          const opener = dir === Direction.AgentToCollector ? s.collectorOpener : s.agentOpener;
          const code = apmCode(() => opener.open(type, Buffer.from(bytes)));
          assert.ok(ALLOWED.has(code), code);
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('mutations of genuine frames either open unchanged or throw ApmError subclasses', () => {
    const mutationArb = fc.record({
      kind: fc.constantFrom('text' as const, 'numeric' as const),
      body: fc.uint8Array({ maxLength: 64 }),
      edits: fc.array(fc.record({ at: fc.nat(), xor: fc.integer({ min: 0, max: 255 }) }), { maxLength: 4 }),
      cut: fc.option(fc.nat(), { nil: undefined }),
      relabel: fc.option(fc.integer({ min: 0, max: 255 }), { nil: undefined }),
    });
    // One session: a mutated frame never authenticates, so it never moves the receiver; the genuine
    // frame is then delivered, so every run seals the next counter the receiver expects.
    const s = session();
    fc.assert(
      fc.property(mutationArb, ({ kind, body, edits, cut, relabel }) => {
        const frame = s.agentSealer[kind](Inner.TextBatch, body);
        const original = frame.subarray(5);
        let payload: Buffer = Buffer.from(original);
        for (const e of edits) {
          const i = e.at % payload.length;
          payload[i] = (payload[i] as number) ^ e.xor;
        }
        if (cut !== undefined) payload = payload.subarray(0, cut % (payload.length + 1));
        const type = relabel ?? (frame[4] as number);
        let opened: ReturnType<Opener['open']> | undefined;
        try {
          opened = s.collectorOpener.open(type, payload);
        } catch (err) {
          assert.ok(err instanceof ApmError, String(err));
          assert.ok(ALLOWED.has(err.code), err.code);
          assert.deepEqual(s.collectorOpener.open(frame[4] as number, original).body, Buffer.from(body), 'the failure did not move the receiver');
          return;
        }
        // Only an unchanged frame opens.
        assert.equal(type, frame[4]);
        assert.deepEqual(payload, original);
        assert.deepEqual(opened.body, Buffer.from(body));
      }),
      { numRuns: 500 },
    );
  });

  it('random bytes given to the inner decoders only ever throw ERR_MALFORMED_MESSAGE', () => {
    const decoders = [decodeMetricBatch, decodeTextBatch, decodeAgentInfo, decodeAgentConfig, decodeLicense, decodeUpError, decodeUpAck, decodePing];
    fc.assert(
      fc.property(
        fc.constantFrom(...decoders),
        fc.oneof(
          fc.uint8Array({ maxLength: 200 }),
          fc.json().map((j) => new TextEncoder().encode(j)),
        ),
        (decode, bytes) => {
          try {
            decode(Buffer.from(bytes));
          } catch (err) {
            assert.ok(err instanceof MalformedMessageError, String(err));
          }
        },
      ),
      { numRuns: 2000 },
    );
  });
});
