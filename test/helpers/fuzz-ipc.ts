// Hostile IPC input for property tests: random frames, mutated genuine frames, JSON bodies with
// the keys each message type expects, and streams of them; shared by the unit property tests
// (test/unit/proto-fuzz) and the scaled fault cases (test/faults/input-fuzz).
import fc from 'fast-check';
import { ApmError, MessageType, encodeFrame } from '@apm-sidecar/proto';
import { sampleFrames } from '../unit/proto-fixtures';

/** Cut `buf` at the given offsets (taken modulo its length + 1). */
export function split(buf: Buffer, cuts: number[]): Buffer[] {
  const at = [...new Set(cuts.map((c) => c % (buf.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let prev = 0;
  for (const c of at) {
    out.push(buf.subarray(prev, c));
    prev = c;
  }
  out.push(buf.subarray(prev));
  return out;
}

/** Rethrow anything that is not an ApmError, so fast-check reports it. */
export function onlyApmErrors(fn: () => void): ApmError | undefined {
  try {
    fn();
    return undefined;
  } catch (err) {
    if (err instanceof ApmError) return err;
    throw err;
  }
}

export const samples = sampleFrames();
export const cutsArb = fc.array(fc.nat(), { maxLength: 10 });

// ---------------------------------------------------------------------------
// (a) hostile input

const frameArb = fc
  .record({ type: fc.integer({ min: 0, max: 20 }), payload: fc.uint8Array({ maxLength: 200 }) })
  .map(({ type, payload }) => encodeFrame(type, payload));

/** A valid sample frame with bytes overwritten, inserted or cut, re-framed so the decoder sees it. */
const mutatedArb = fc
  .record({
    sample: fc.constantFrom(...samples),
    edits: fc.array(fc.record({ op: fc.constantFrom('set', 'insert', 'delete'), at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }), {
      minLength: 1,
      maxLength: 4,
    }),
    cut: fc.option(fc.nat()),
    retype: fc.option(fc.integer({ min: 0, max: 20 }), { freq: 5 }),
  })
  .map(({ sample, edits, cut, retype }) => {
    const bytes = [...sample.frame.subarray(5)];
    for (const e of edits) {
      const at = e.at % (bytes.length + 1);
      if (e.op === 'set' && at < bytes.length) bytes[at] = e.byte;
      else if (e.op === 'insert') bytes.splice(at, 0, e.byte);
      else bytes.splice(at, 1);
    }
    const payload = Buffer.from(cut === null ? bytes : bytes.slice(0, cut % (bytes.length + 1)));
    return encodeFrame(retype ?? sample.type, payload);
  });

/** A JSON body with the keys a message type expects, holding any JSON values. */
const jsonKeys: Record<number, string[]> = {
  [MessageType.Hello]: ['v', 'app', 'pid', 'shimVersion', 'instanceId', 'secret', 'seq', 'host', 'runtime'],
  [MessageType.Welcome]: ['state', 'settings', 'ackedSeq', 'agentId', 'sidecarVersion'],
  [MessageType.Trace]: ['txid', 'traceId', 'spanId', 'parentSpanId', 'name', 'startTime', 'durationMs', 'error', 'steps'],
  [MessageType.ActiveStack]: ['txid', 'name', 'ts', 'elapsedMs', 'frames'],
  [MessageType.Event]: ['ts', 'type', 'message', 'attributes'],
  [MessageType.Snapshot]: ['ts', 'kind', 'data'],
  [MessageType.StateChange]: ['state', 'cause'],
  [MessageType.Error]: ['code', 'message'],
  [MessageType.Control]: ['command'],
  [MessageType.ControlResult]: ['ok', 'message'],
};
const jsonShapedArb = fc.constantFrom(...Object.keys(jsonKeys).map(Number)).chain((type) => {
  const fields: Record<string, fc.Arbitrary<unknown>> = {};
  for (const k of jsonKeys[type] as string[])
    fields[k] = fc.oneof(fc.jsonValue({ maxDepth: 2 }), fc.constantFrom(1, 'x', 'active', [], [{}], { flushMs: 1, maxFrameBytes: 'x' }));
  return fc.record(fields, { requiredKeys: [] }).map((o) => encodeFrame(type, Buffer.from(JSON.stringify(o))));
});

export const hostileStreamArb = fc.oneof(
  fc.uint8Array({ maxLength: 2048 }).map((a) => Buffer.from(a)),
  fc
    .array(fc.oneof(frameArb, mutatedArb, jsonShapedArb, fc.constantFrom(...samples.map((s) => s.frame))), { minLength: 1, maxLength: 8 })
    .map((fs) => Buffer.concat(fs)),
  fc.tuple(fc.array(mutatedArb, { maxLength: 4 }), fc.uint8Array({ maxLength: 64 })).map(([fs, tail]) => Buffer.concat([...fs, tail])),
);
