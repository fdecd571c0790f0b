import { Writer } from '@apm-sidecar/proto';
import type { TextItem } from '@apm-sidecar/proto/upstream';
import type { Pack } from '../pack';

export type Done = (err?: Error) => void;

/** A frame body ready to seal: `numeric` holds metric packs (MetricBatch), `text` the rest (TextBatch). */
export interface FrameBody {
  readonly key: 'text' | 'numeric';
  readonly body: Buffer;
  /** One per pack in the frame, in pack order. */
  readonly dones: Done[];
}

/** Packs for one frame being assembled. */
class Lane {
  readonly parts: Buffer[] = [];
  readonly dones: Done[] = [];
  bytes = 0;
}

/** Room left for the frame header, sealing and the JSON/varint wrapping around the parts. */
const ENVELOPE = 64;
const COMMA = Buffer.from(',');
const OPEN = Buffer.from('{"items":[');
const CLOSE = Buffer.from(']}');

/**
 * Packs → frame bodies of at most `maxBytes` (net_send_max_bytes), in replay order (DESIGN §6):
 *
 *   lane bt      registrations           → a text frame
 *   lane metric  metric packs (encoded)  → a numeric frame
 *   lane text    events, snapshots, traces, active stacks → a text frame
 *
 * `seal()` empties the lanes in that order, so the collector stores registrations before the
 * metrics that name them, and both before the events. Pure: no session, no clock, no I/O.
 */
export class FrameBatcher {
  private bt = new Lane();
  private metric = new Lane();
  private text = new Lane();

  constructor(private readonly maxBytes: number) {}

  get empty(): boolean {
    return this.bt.parts.length + this.metric.parts.length + this.text.parts.length === 0;
  }

  /**
   * Adds a pack. When its lane would grow past `maxBytes`, everything batched so far is sealed
   * first (all lanes, to keep the order) and returned; the pack starts the next frame.
   */
  add(pack: Pack, done: Done): FrameBody[] {
    const [laneName, bytes] = encodePart(pack);
    const lane = this[laneName];
    const sealed = lane.bytes > 0 && lane.bytes + bytes.length + ENVELOPE > this.maxBytes ? this.seal() : [];
    const into = this[laneName];
    into.parts.push(bytes);
    into.dones.push(done);
    into.bytes += bytes.length + 1;
    return sealed;
  }

  /** Everything batched, as at most three frame bodies in replay order; the lanes start empty. */
  seal(): FrameBody[] {
    const out: FrameBody[] = [];
    const { bt, metric, text } = this;
    this.bt = new Lane();
    this.metric = new Lane();
    this.text = new Lane();
    if (bt.parts.length > 0) out.push({ key: 'text', body: textBody(bt), dones: bt.dones });
    if (metric.parts.length > 0) {
      const w = new Writer(metric.bytes + 16);
      w.varint(metric.parts.length);
      for (const p of metric.parts) w.bytes(p);
      out.push({ key: 'numeric', body: w.body(), dones: metric.dones });
    }
    if (text.parts.length > 0) out.push({ key: 'text', body: textBody(text), dones: text.dones });
    return out;
  }

  /** Forget what is batched; its dones, in the order the packs were added by lane (bt, metric, text). */
  takeDones(): Done[] {
    const all = [...this.bt.dones, ...this.metric.dones, ...this.text.dones];
    this.bt = new Lane();
    this.metric = new Lane();
    this.text = new Lane();
    return all;
  }
}

function textBody(lane: Lane): Buffer {
  return Buffer.concat([OPEN, ...lane.parts.flatMap((p, i) => (i === 0 ? [p] : [COMMA, p])), CLOSE]);
}

function encodePart(pack: Pack): ['bt' | 'metric' | 'text', Buffer] {
  // Metric packs were encoded once, when their interval closed (the retention keeps the same bytes).
  if (pack.kind === 'metrics') return ['metric', pack.body];
  return [pack.kind === 'btRegistration' ? 'bt' : 'text', Buffer.from(JSON.stringify(textItem(pack)))];
}

function textItem(pack: Exclude<Pack, { kind: 'metrics' }>): TextItem {
  switch (pack.kind) {
    case 'trace':
      return { kind: 'trace', origin: pack.origin, trace: pack.trace };
    case 'activeStack':
      return { kind: 'activeStack', origin: pack.origin, stack: pack.stack };
    case 'event':
      return { kind: 'event', origin: pack.origin, event: pack.event };
    case 'snapshot':
      return { kind: 'snapshot', origin: pack.origin, snapshot: pack.snapshot };
    case 'btRegistration':
      return { kind: 'btRegistration', origin: pack.origin, name: pack.name, ts: pack.ts };
  }
}
