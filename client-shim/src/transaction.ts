import {
  CORRELATION_HEADER,
  type ProfilePack,
  TRACEPARENT_HEADER,
  type TraceStep,
  formatCorrelation,
  formatTraceparent,
  parseCorrelation,
  parseTraceparent,
  readHeader,
} from '@apm-sidecar/proto';
import { randomHex } from './ids';

export const MAX_STEPS = 1000;
const MAX_STEP_TEXT = 4096;

export interface OutgoingHeaders {
  [name: string]: string;
}

export interface EndOptions {
  error?: unknown;
}

export interface Transaction {
  /** True when this request is detected (a real transaction), false for the no-op one. */
  readonly detected: boolean;
  readonly txid: string;
  readonly name: string;
  step(type: string, text: string, durationMs: number): void;
  outgoingHeaders(): OutgoingHeaders;
  end(opts?: EndOptions): void;
}

/** What the client needs from a transaction's end. */
export interface TransactionSink {
  transactionEnded(tx: ActiveTransaction, pack: ProfilePack): void;
  drop(reason: string, n?: number): void;
}

/** Text of `opts.error`; never throws (an error object's getters or toString may). */
function errorText(opts: EndOptions | undefined): string | undefined {
  try {
    const e = opts?.error;
    if (e === undefined || e === null || e === false) return undefined;
    if (e instanceof Error) return `${e.name}: ${e.message}`.slice(0, MAX_STEP_TEXT);
    return String(e).slice(0, MAX_STEP_TEXT);
  } catch {
    return 'error';
  }
}

export class ActiveTransaction implements Transaction {
  readonly detected = true;
  readonly txid: string;
  readonly traceId: string;
  readonly spanId: string;
  readonly parentSpanId: string | undefined;
  readonly startTime = Date.now();
  readonly start = performance.now();
  private readonly steps: TraceStep[] = [];
  private ended = false;

  constructor(
    private readonly sink: TransactionSink,
    readonly name: string,
    incomingTraceId: string | undefined,
    incomingParent: string | undefined,
  ) {
    this.spanId = randomHex(8);
    this.traceId = incomingTraceId ?? randomHex(16);
    this.parentSpanId = incomingParent;
    this.txid = this.spanId;
  }

  get elapsedMs(): number {
    return performance.now() - this.start;
  }

  get isEnded(): boolean {
    return this.ended;
  }

  step(type: string, text: string, durationMs: number): void {
    if (this.ended) return this.sink.drop('closed');
    if (
      typeof type !== 'string' ||
      typeof text !== 'string' ||
      typeof durationMs !== 'number' ||
      !(durationMs >= 0) ||
      durationMs === Number.POSITIVE_INFINITY
    ) {
      return this.sink.drop('invalid');
    }
    if (this.steps.length >= MAX_STEPS) return this.sink.drop('too_many_steps');
    const offset = this.elapsedMs - durationMs;
    this.steps.push({ type: type.slice(0, 64), text: text.slice(0, MAX_STEP_TEXT), durationMs, offsetMs: Math.max(offset, 0) });
  }

  outgoingHeaders(): OutgoingHeaders {
    return {
      [CORRELATION_HEADER]: `txid=${this.txid}`,
      [TRACEPARENT_HEADER]: formatTraceparent(this.traceId, this.spanId),
    };
  }

  end(opts?: EndOptions): void {
    if (this.ended) return;
    this.ended = true;
    const pack: ProfilePack = {
      txid: this.txid,
      traceId: this.traceId,
      spanId: this.spanId,
      name: this.name,
      startTime: this.startTime,
      durationMs: this.elapsedMs,
      steps: this.steps,
    };
    if (this.parentSpanId !== undefined) pack.parentSpanId = this.parentSpanId;
    const err = errorText(opts);
    if (err !== undefined) pack.error = err;
    this.sink.transactionEnded(this, pack);
  }
}

/**
 * Not detected: returned in standby and muted, or when the request carried
 * notxdetect=true. Costs nothing; when `notxdetect` is set it passes the flag on
 * so downstream services do not detect the call either.
 */
export class NoopTransaction implements Transaction {
  readonly detected = false;
  readonly txid = '';
  constructor(
    readonly name: string,
    private readonly headers: OutgoingHeaders,
  ) {}
  step(): void {}
  outgoingHeaders(): OutgoingHeaders {
    return { ...this.headers };
  }
  end(): void {}
}

export const NOTXDETECT_HEADERS: OutgoingHeaders = Object.freeze({ [CORRELATION_HEADER]: 'notxdetect=true' }) as OutgoingHeaders;
const NONE: OutgoingHeaders = Object.freeze({}) as OutgoingHeaders;

export interface Incoming {
  notxdetect: boolean;
  correlation: Map<string, string>;
  traceId: string | undefined;
  parentId: string | undefined;
  traceparent: string | undefined;
}

export function readIncoming(headers: unknown): Incoming {
  const correlation = parseCorrelation(readHeader(headers, CORRELATION_HEADER));
  const tpRaw = readHeader(headers, TRACEPARENT_HEADER);
  const tp = parseTraceparent(tpRaw);
  return {
    notxdetect: correlation.get('notxdetect') === 'true',
    correlation,
    traceId: tp?.traceId,
    parentId: tp?.parentId,
    traceparent: tp === undefined ? undefined : tpRaw,
  };
}

/** The headers a no-op transaction passes on: notxdetect when asked to, the caller's traceparent unchanged. */
export function noopHeaders(incoming: Incoming | undefined, notxdetect: boolean): OutgoingHeaders {
  if (!notxdetect && incoming?.traceparent === undefined) return NONE;
  const out: OutgoingHeaders = {};
  if (notxdetect) {
    const c = new Map(incoming?.correlation ?? []);
    c.set('notxdetect', 'true');
    out[CORRELATION_HEADER] = formatCorrelation(c);
  }
  if (incoming?.traceparent !== undefined) out[TRACEPARENT_HEADER] = incoming.traceparent;
  return out;
}
