import { Reader, Writer } from '../buffer';
import { MalformedMessageError } from '../errors';
import { MessageType, type ProfilePack, type TraceStep } from './types';

/**
 * The Trace message (a ProfilePack), binary since IPC protocol 3. Traces are the busiest
 * text-heavy message, and a JSON body cost the sidecar more than everything else it did with
 * a trace (JSON.parse alone ≈ 3 ns a byte). Numbers come first, then every string's length,
 * then the strings as one UTF-8 text, so the receiver decodes the text once and slices it:
 *
 *   Trace := startTime f64 | durationMs f64 | flags u8 | n varint
 *            | (durationMs f64 | offsetMs f64) × n                          the steps' numbers
 *            | len varint × (5 + 2n, + 1 per flag)                          UTF-16 code units
 *            | text str                                                    varint byte length | UTF-8
 *   flags := 1 parentSpanId present | 2 error present
 *   text  := txid traceId spanId [parentSpanId] name [error] (type text) × n, concatenated
 *
 * The lengths must add up to the text's length. A lone surrogate in a string arrives as
 * U+FFFD (UTF-8 has no encoding for it), one code unit as well.
 */
const HAS_PARENT = 1;
const HAS_ERROR = 2;
/** The largest string of each field, as the JSON decoder allowed (upstream TextBatch still does). */
const MAX_ID = 64;
const MAX_NAME = 1024;
const MAX_TEXT = 64 * 1024;
/** Bytes a step takes at least: two f64 and two one-byte lengths. */
const MIN_STEP_BYTES = 18;

export function encodeTrace(m: ProfilePack): Buffer {
  const steps = m.steps;
  const parent = m.parentSpanId;
  const error = m.error;
  const w = new Writer(256 + 40 * steps.length);
  w.f64(m.startTime)
    .f64(m.durationMs)
    .u8((parent !== undefined ? HAS_PARENT : 0) | (error !== undefined ? HAS_ERROR : 0))
    .varint(steps.length);
  for (const s of steps) w.f64(s.durationMs).f64(s.offsetMs);
  let text = m.txid + m.traceId + m.spanId;
  w.varint(m.txid.length).varint(m.traceId.length).varint(m.spanId.length);
  if (parent !== undefined) {
    w.varint(parent.length);
    text += parent;
  }
  w.varint(m.name.length);
  text += m.name;
  if (error !== undefined) {
    w.varint(error.length);
    text += error;
  }
  for (const s of steps) {
    w.varint(s.type.length).varint(s.text.length);
    text += s.type + s.text;
  }
  w.str(text);
  return w.frame(MessageType.Trace);
}

/** Slices the decoded text in field order, its lengths read again from where the first pass summed them. */
class TextCursor {
  private at = 0;

  constructor(
    private readonly text: string,
    private readonly lengths: Reader,
  ) {}

  /** The next string, checked against its field's limit; `what` (and `step`) name it in the error only. */
  next(what: string, max: number, step = -1): string {
    const n = this.lengths.varint();
    if (n > max) throw new MalformedMessageError(`trace.${step < 0 ? '' : `steps[${step}].`}${what} longer than ${max}`);
    const s = this.text.slice(this.at, this.at + n);
    this.at += n;
    return s;
  }
}

function notFinite(what: string): MalformedMessageError {
  return new MalformedMessageError(`trace.${what} must be a finite number`);
}

/**
 * The lengths are summed and checked against the text before any string is cut from it; they
 * are then read again, next to the step numbers, as the strings are cut.
 */
export function decodeTrace(p: Buffer): ProfilePack {
  const r = new Reader(p);
  const startTime = r.f64();
  if (!Number.isFinite(startTime)) throw notFinite('startTime');
  const durationMs = r.f64();
  if (!Number.isFinite(durationMs)) throw notFinite('durationMs');
  const flags = r.u8();
  if ((flags & ~(HAS_PARENT | HAS_ERROR)) !== 0) throw new MalformedMessageError(`trace flags ${flags}`);
  const n = r.varint();
  if (n * MIN_STEP_BYTES > r.remaining) throw new MalformedMessageError(`trace declares ${n} steps`);
  const numbersAt = r.pos;
  r.view(16 * n);
  const lengthsAt = r.pos;
  const count = 4 + (flags & HAS_PARENT ? 1 : 0) + (flags & HAS_ERROR ? 1 : 0) + 2 * n;
  let total = 0;
  for (let i = 0; i < count; i++) total += r.varint();
  const text = r.str();
  r.expectEnd('trace');
  if (total !== text.length) throw new MalformedMessageError(`trace strings declare ${total} characters, the text has ${text.length}`);
  const c = new TextCursor(text, new Reader(p, lengthsAt));
  const txid = c.next('txid', MAX_ID);
  const traceId = c.next('traceId', MAX_ID);
  const spanId = c.next('spanId', MAX_ID);
  const parentSpanId = flags & HAS_PARENT ? c.next('parentSpanId', MAX_TEXT) : undefined;
  const name = c.next('name', MAX_NAME);
  const error = flags & HAS_ERROR ? c.next('error', MAX_TEXT) : undefined;
  const steps: TraceStep[] = [];
  for (let i = 0, at = numbersAt; i < n; i++, at += 16) {
    const stepMs = p.readDoubleLE(at);
    if (!Number.isFinite(stepMs)) throw notFinite(`steps[${i}].durationMs`);
    const offsetMs = p.readDoubleLE(at + 8);
    if (!Number.isFinite(offsetMs)) throw notFinite(`steps[${i}].offsetMs`);
    steps.push({ type: c.next('type', MAX_ID, i), text: c.next('text', MAX_TEXT, i), durationMs: stepMs, offsetMs });
  }
  const m: ProfilePack = { txid, traceId, spanId, name, startTime, durationMs, steps };
  if (parentSpanId !== undefined) m.parentSpanId = parentSpanId;
  if (error !== undefined) m.error = error;
  return m;
}
