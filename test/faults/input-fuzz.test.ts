// Scaled fast-check fuzzing of every parser that reads bytes from a peer: the IPC frame parser and
// message decoders, the upstream frame parser with the Opener and the inner decoders, the handshake
// (the agent's ClientHandshake, the collector's ClientHello reader and key proof), and the DogStatsD
// lines. The unit property tests (test/unit/proto-fuzz, upstream-seal) run a few hundred cases
// each; these run byLevel(1500, 10000, 100000) per parser (700 for the handshake at quick) and report the figures.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { type ApmError, FrameParser, type Series, decodeShimMessage } from '@apm-sidecar/proto';
import {
  type AccessKey,
  ClientHandshake,
  Direction,
  Inner,
  type Nacl,
  Opener,
  Sealer,
  ServerHandshake,
  UpstreamType,
  decodeAgentConfig,
  decodeAgentInfo,
  decodeLicense,
  decodeMetricBatch,
  decodePing,
  decodeTextBatch,
  decodeUpAck,
  decodeUpError,
  nodeX25519,
  readClientHello,
} from '@apm-sidecar/proto/upstream';
import { proveKey } from '@apm-sidecar/collector';
import { DogStatsdAggregator } from '@apm-sidecar/sidecar';
import nacl from 'tweetnacl';
import { byLevel, recordFigures, seed } from '../helpers/figures';
import { cutsArb, hostileStreamArb, onlyApmErrors, split } from '../helpers/fuzz-ipc';
import { decodeAny } from '../unit/proto-fixtures';

const FILE = 'faults/input-fuzz';
const RUNS = byLevel(1500, 10_000, 100_000);
/** Each handshake case runs the key exchange (milliseconds on a loaded machine): fewer at quick. */
const HANDSHAKE_RUNS = byLevel(700, 10_000, 100_000);
/** The upstream's largest frame before authentication (collector PREAUTH_MAX_FRAME_BYTES) and after (max_frame_bytes default). */
const PREAUTH_MAX = 4096;
const MAX = 8 * 1024 * 1024;

/** Errors seen, by code: the figures show which typed errors the fuzzing reached. */
type Codes = Record<string, number>;
function tally(codes: Codes, err: ApmError | undefined): void {
  if (err !== undefined) codes[err.code] = (codes[err.code] ?? 0) + 1;
}

/**
 * The agent's X25519 as the sidecar computes it (proto's nodeX25519, node:crypto; the collector's
 * proveKey uses the same): tweetnacl's own takes ~3 ms per handshake, and 100,000 cases would spend
 * minutes on the curve, not on the parsers under test.
 */
const fastNacl: Nacl = { ...nacl, ...nodeX25519 };

const KEY: AccessKey = { projectId: 'fuzz', secret: randomBytes(32) };
const PROJECT_KEYS = [{ id: 1, secret: KEY.secret, revokedAt: null }];

/** Overwrite, insert or delete bytes of a genuine payload, or cut it. */
const editsArb = fc.record({
  edits: fc.array(fc.record({ op: fc.constantFrom('xor', 'insert', 'delete'), at: fc.nat(), byte: fc.integer({ min: 1, max: 255 }) }), {
    minLength: 1,
    maxLength: 4,
  }),
  cut: fc.option(fc.nat(), { nil: undefined }),
});
function mutate(payload: Buffer, m: { edits: { op: string; at: number; byte: number }[]; cut: number | undefined }): Buffer {
  const bytes = [...payload];
  for (const e of m.edits) {
    const at = e.at % (bytes.length + 1);
    if (e.op === 'xor' && at < bytes.length) bytes[at] = (bytes[at] as number) ^ e.byte;
    else if (e.op === 'insert') bytes.splice(at, 0, e.byte);
    else bytes.splice(at, 1);
  }
  const out = Buffer.from(bytes);
  return m.cut === undefined ? out : out.subarray(0, m.cut % (out.length + 1));
}

function record(name: string, fault: string, s: number, extra: Record<string, number | string>): void {
  recordFigures(
    FILE,
    {
      case: name,
      section: 'input',
      load: 'none (in-process)',
      fault,
      lost: 0,
      duplicated: 0,
      maxRssMb: { test: Math.round(process.memoryUsage().rss / 1048576) },
      recoverMs: null,
      extra: { cases: RUNS, seed: s, ...extra },
    },
    s,
  );
}

describe('input attacks: fuzzing the parsers', () => {
  it('IPC: hostile streams in random splits only ever raise typed errors from the frame parser and the decoders', () => {
    const s = seed();
    const codes: Codes = {};
    let frames = 0;
    const t0 = Date.now();
    fc.assert(
      fc.property(hostileStreamArb, cutsArb, (stream, cuts) => {
        const cache = new Map<string, Series>();
        const parser = new FrameParser(1024 * 1024, (type, payload) => {
          frames++;
          tally(
            codes,
            onlyApmErrors(() => decodeAny(type, payload)),
          );
          tally(
            codes,
            onlyApmErrors(() => decodeShimMessage(type, payload, cache)),
          );
        });
        for (const chunk of split(stream, cuts)) {
          const err = onlyApmErrors(() => parser.push(chunk));
          tally(codes, err);
          if (err !== undefined) break;
        }
        tally(
          codes,
          onlyApmErrors(() => parser.end()),
        );
        assert.equal(parser.pendingBytes, 0);
      }),
      { numRuns: RUNS, seed: s },
    );
    record('input/fuzz-ipc-parser', 'random bytes, random and mutated frames, JSON bodies of every message type, split anywhere', s, {
      frames,
      ms: Date.now() - t0,
      codes: JSON.stringify(codes),
    });
    assert.ok(frames > 0);
  });

  it('upstream: hostile streams through the frame parser at the pre-auth and session limits reach only typed errors from the ClientHello reader, the Opener and the inner decoders', () => {
    const s = seed();
    const codes: Codes = {};
    const decoders = [decodeMetricBatch, decodeTextBatch, decodeAgentInfo, decodeAgentConfig, decodeLicense, decodeUpError, decodeUpAck, decodePing];
    const keys = { textKey: randomBytes(32), numericKey: randomBytes(32) };
    const sealer = new Sealer(nacl, keys, Direction.AgentToCollector);
    const genuine = fc
      .tuple(fc.constantFrom<'text' | 'numeric'>('text', 'numeric'), fc.uint8Array({ maxLength: 64 }))
      .map(([kind, body]) => sealer[kind](Inner.TextBatch, body));
    const upFrame = fc.oneof(
      fc.record({ type: fc.constantFrom(0x20, 0x21, 0x22, 0x23, 0x30, 0x31, 0, 255), payload: fc.uint8Array({ maxLength: 300 }) }).map(({ type, payload }) => {
        const b = Buffer.alloc(5 + payload.length);
        b.writeUInt32LE(payload.length + 1, 0);
        b[4] = type;
        b.set(payload, 5);
        return b;
      }),
      fc.tuple(genuine, editsArb).map(([f, m]) => {
        const p = mutate(f.subarray(5), m);
        const b = Buffer.alloc(5 + p.length);
        b.writeUInt32LE(p.length + 1, 0);
        b[4] = f[4] as number;
        p.copy(b, 5);
        return b;
      }),
      fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a)),
    );
    const t0 = Date.now();
    let frames = 0;
    fc.assert(
      fc.property(fc.array(upFrame, { minLength: 1, maxLength: 6 }), cutsArb, fc.boolean(), (fs, cuts, preauth) => {
        const opener = new Opener(nacl, keys, Direction.AgentToCollector);
        const parser = new FrameParser(preauth ? PREAUTH_MAX : MAX, (type, payload) => {
          frames++;
          if (type === UpstreamType.ClientHello)
            tally(
              codes,
              onlyApmErrors(() => readClientHello(payload)),
            );
          else if (type === UpstreamType.Text || type === UpstreamType.Numeric) {
            const err = onlyApmErrors(() => {
              const o = opener.open(type, payload);
              for (const d of decoders)
                tally(
                  codes,
                  onlyApmErrors(() => d(o.body)),
                );
            });
            tally(codes, err);
          } else
            for (const d of decoders)
              tally(
                codes,
                onlyApmErrors(() => d(payload)),
              );
        });
        for (const chunk of split(Buffer.concat(fs), cuts)) {
          const err = onlyApmErrors(() => parser.push(chunk));
          tally(codes, err);
          if (err !== undefined) break;
        }
        tally(
          codes,
          onlyApmErrors(() => parser.end()),
        );
      }),
      { numRuns: RUNS, seed: s },
    );
    record(
      'input/fuzz-upstream-opener',
      'random and mutated sealed frames, clear handshake frames and raw bytes, split anywhere, at 4 KiB and 8 MiB limits',
      s,
      {
        frames,
        ms: Date.now() - t0,
        codes: JSON.stringify(codes),
      },
    );
    assert.ok((codes.ERR_TAMPERED ?? 0) > 0, 'the mutations reached authentication');
  });

  it('handshake: random and mutated ClientHello, ServerHello and ClientFinished payloads end only in ERR_HANDSHAKE, ERR_BAD_KEY or ERR_SERVER_PROOF, and only genuine ones succeed', () => {
    const s = seed();
    const codes: Codes = {};
    const allowed = new Set(['ERR_HANDSHAKE', 'ERR_BAD_KEY', 'ERR_SERVER_PROOF', 'ERR_MALFORMED_MESSAGE']);
    const check = (err: ApmError | undefined) => {
      tally(codes, err);
      if (err !== undefined) assert.ok(allowed.has(err.code), err.code);
    };
    // Control: the genuine exchange through the same code succeeds, so a refusal below is the input's doing.
    const c0 = new ClientHandshake(fastNacl, KEY, 'agent-1');
    const p0 = proveKey(readClientHello(c0.hello().subarray(5)), PROJECT_KEYS);
    const done0 = c0.serverHello(p0.handshake.serverHello().subarray(5));
    assert.deepEqual(p0.handshake.clientFinished(done0.finished.subarray(5)), done0.keys);
    const genuineHello = new ClientHandshake(fastNacl, KEY, 'agent-1').hello().subarray(5);
    let genuineOk = 0;
    const payloadArb = fc.oneof(
      fc.uint8Array({ maxLength: 200 }).map((a) => ({ random: Buffer.from(a) })),
      editsArb.map((m) => ({ edits: m })),
    );
    const t0 = Date.now();
    fc.assert(
      fc.property(fc.constantFrom('clientHello', 'serverHello', 'clientFinished'), payloadArb, (which, p) => {
        if (which === 'clientHello') {
          // The collector's side needs only the bytes: one genuine hello serves every case.
          const helloPayload = genuineHello;
          const payload = 'random' in p ? p.random : mutate(helloPayload, p.edits);
          const err = onlyApmErrors(() => proveKey(readClientHello(payload), PROJECT_KEYS));
          check(err);
          if (err === undefined) {
            assert.deepEqual(payload, helloPayload, 'only a genuine ClientHello passes the key proof');
            genuineOk++;
          }
          return;
        }
        const client = new ClientHandshake(fastNacl, KEY, 'agent-1');
        const helloPayload = client.hello().subarray(5);
        const server = new ServerHandshake(fastNacl, readClientHello(helloPayload), KEY.secret);
        const serverHello = server.serverHello().subarray(5);
        if (which === 'serverHello') {
          const payload = 'random' in p ? p.random : mutate(serverHello, p.edits);
          const err = onlyApmErrors(() => client.serverHello(payload));
          check(err);
          if (err === undefined) {
            assert.deepEqual(payload, serverHello, 'only the genuine ServerHello convinces the agent');
            genuineOk++;
          }
          return;
        }
        const finished = client.serverHello(serverHello).finished.subarray(5);
        const payload = 'random' in p ? p.random : mutate(finished, p.edits);
        const err = onlyApmErrors(() => server.clientFinished(payload));
        check(err);
        if (err === undefined) {
          assert.deepEqual(payload, finished, 'only the genuine ClientFinished convinces the collector');
          genuineOk++;
        }
      }),
      { numRuns: HANDSHAKE_RUNS, seed: s },
    );
    record('input/fuzz-handshake', 'random and mutated ClientHello (collector key proof), ServerHello (agent), ClientFinished (collector)', s, {
      cases: HANDSHAKE_RUNS,
      genuineOk,
      ms: Date.now() - t0,
      codes: JSON.stringify(codes),
    });
  });

  it('DogStatsD: random and mutated packets never throw, every line is counted, and what is aggregated is finite', () => {
    const s = seed();
    const names = fc.oneof(fc.constantFrom('page.views', 'a', 'x'.repeat(300), '_e{5,4}', '_sc', ''), fc.string({ maxLength: 20 }));
    const values = fc.oneof(fc.constantFrom('1', '-1', '1e308', '1e309', 'NaN', 'Infinity', '0x10', '', '1.5.5'), fc.double().map(String));
    const types = fc.oneof(fc.constantFrom('c', 'g', 'ms', 'h', 'd', 's', 'zz', ''), fc.string({ maxLength: 3 }));
    const extras = fc.array(
      fc.oneof(
        fc.constantFrom('@0.5', '@0', '@2', '@-1', '@NaN', '#', '#a:b,c', '#__proto__:x', '#constructor', 'c:123', 'T1700000000'),
        fc.string({ maxLength: 30 }).map((t) => `#${t}`),
      ),
      { maxLength: 3 },
    );
    const line = fc.oneof(
      fc.tuple(names, values, types, extras).map(([n, v, t, e]) => [`${n}:${v}`, t, ...e].join('|')),
      fc.string({ maxLength: 80 }),
    );
    const packet = fc.oneof(
      fc.array(line, { maxLength: 20 }).map((ls) => Buffer.from(ls.join('\n'))),
      fc.uint8Array({ maxLength: 600 }).map((a) => Buffer.from(a)),
    );
    let lines = 0;
    let points = 0;
    const t0 = Date.now();
    const a = new DogStatsdAggregator();
    fc.assert(
      fc.property(fc.array(packet, { minLength: 1, maxLength: 4 }), (packets) => {
        const before = a.counts.lines;
        let expected = 0;
        for (const p of packets) {
          a.packet(p);
          expected += p
            .toString('utf8')
            .split('\n')
            // A line's trailing \r (CRLF clients) is not part of it: "\r" alone is an empty line.
            .filter((l) => l.replace(/\r$/, '').length > 0).length;
        }
        assert.equal(a.counts.lines - before, expected, 'every line counted once');
        lines += expected;
        const msgs = a.take(1, Date.now());
        for (const pt of msgs.flatMap((m) => m.points)) {
          points++;
          assert.ok(Number.isFinite(pt.sum) && Number.isFinite(pt.count), `a non-finite point: ${JSON.stringify(pt.series)}`);
        }
      }),
      { numRuns: RUNS, seed: s },
    );
    record('input/fuzz-dogstatsd', 'random and grammar-shaped DogStatsD packets (bad values, rates, tags, types, events, service checks)', s, {
      lines,
      points,
      invalid: a.counts.invalid,
      events: a.counts.events + a.counts.serviceChecks,
      ms: Date.now() - t0,
    });
    assert.ok(a.counts.invalid > 0 && points > 0);
  });
});
