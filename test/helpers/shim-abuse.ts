/**
 * Every public API of the shim called with hostile arguments. Used against an
 * absent sidecar, a closed client and a real sidecar: nothing may throw into
 * the app, every promise must resolve, and nothing sent may be rejected.
 */
import { type ApmClient, connect } from '@apm-sidecar/shim';

/** Calls with arbitrary arguments, as untyped JavaScript would make them. */
type Loose = Record<string, (...args: unknown[]) => unknown>;

function cyclic(): Record<string, unknown> {
  const o: Record<string, unknown> = { a: 1, list: [] };
  o.self = o;
  (o.list as unknown[]).push(o);
  return o;
}

function throwingGetters(): Record<string, unknown> {
  const boom = () => {
    throw new Error('getter');
  };
  return Object.defineProperties(
    {},
    {
      type: { get: boom, enumerable: true },
      message: { get: boom, enumerable: true },
      error: { get: boom, enumerable: true },
      attributes: { get: boom, enumerable: true },
      app: { get: boom, enumerable: true },
      socket: { get: boom, enumerable: true },
      toJSON: { get: boom },
    },
  );
}

function throwingProxy(): object {
  const trap = () => {
    throw new Error('trap');
  };
  return new Proxy({}, { get: trap, has: trap, ownKeys: trap, getOwnPropertyDescriptor: trap, getPrototypeOf: trap });
}

/** A huge string (2 MiB, over the 1 MiB frame limit). */
export const HUGE = 'x'.repeat(2 * 1024 * 1024);

export function badValues(): { label: string; value: unknown }[] {
  const values: [string, unknown][] = [
    ['undefined', undefined],
    ['null', null],
    ['NaN', Number.NaN],
    ['Infinity', Number.POSITIVE_INFINITY],
    ['-Infinity', Number.NEGATIVE_INFINITY],
    ['-1', -1],
    ['1e308', 1e308],
    ['-1e308', -1e308],
    ['empty string', ''],
    ['string', 'some string'],
    ['huge string', HUGE],
    ['lone surrogate', '\ud800x'],
    ['object', { a: 1 }],
    ['array', [1, 'a', null]],
    ['cyclic object', cyclic()],
    ['BigInt', 10n],
    ['object with BigInt', { n: 10n }],
    ['symbol', Symbol('s')],
    ['function', () => 1],
    ['throwing getters', throwingGetters()],
    ['throwing proxy', throwingProxy()],
    ['invalid Date', new Date(Number.NaN)],
    ['null prototype', Object.create(null)],
    ['toJSON undefined', { toJSON: () => undefined }],
    ['__proto__ key', JSON.parse('{"__proto__":"x","a":"b"}')],
  ];
  return values.map(([label, value]) => ({ label, value }));
}

export interface AbuseResult {
  /** Calls that threw: "api(label): message". */
  threw: string[];
  /** Promises returned by flush(); each must resolve to a boolean. */
  flushes: Promise<unknown>[];
}

/** Call every API of `apm` with every bad value. */
export function abuse(apm: ApmClient): AbuseResult {
  const threw: string[] = [];
  const flushes: Promise<unknown>[] = [];
  const a = apm as unknown as Loose;
  const call = (what: string, label: string, fn: () => unknown): unknown => {
    try {
      return fn();
    } catch (err) {
      threw.push(`${what}(${label}): ${String((err as Error)?.message ?? err)}`);
      return undefined;
    }
  };
  const good = {
    counter: apm.counter('abuse.counter') as unknown as Loose,
    gauge: apm.gauge('abuse.gauge') as unknown as Loose,
    histogram: apm.histogram('abuse.histogram') as unknown as Loose,
  };
  const running = apm.startTransaction('abuse tx');
  for (const { label, value: v } of badValues()) {
    for (const [kind, method] of [
      ['counter', 'add'],
      ['gauge', 'set'],
      ['histogram', 'record'],
    ] as const) {
      call(`${kind}.${method}`, label, () => good[kind][method]?.(v));
      const byName = call(kind, label, () => a[kind]?.(v)) as Loose | undefined;
      call(`${kind}(name).${method}`, label, () => byName?.[method]?.(1));
      const byTags = call(`${kind}(ok, tags)`, label, () => a[kind]?.('abuse.tags', v)) as Loose | undefined;
      call(`${kind}(ok, tags).${method}`, label, () => byTags?.[method]?.(1));
      call(`${kind}(ok, {k: v})`, label, () => (a[kind]?.('abuse.tagvalue', { k: v }) as Loose | undefined)?.[method]?.(1));
    }
    const tx = call('startTransaction', label, () => a.startTransaction?.(v)) as Loose | undefined;
    const tx2 = call('startTransaction(ok, headers)', label, () => a.startTransaction?.('abuse headers', v)) as Loose | undefined;
    call('startTransaction(ok, {traceparent: v})', label, () => a.startTransaction?.('abuse tp', { traceparent: v, 'apm-correlation': v }));
    for (const t of [tx, tx2, running as unknown as Loose]) {
      if (t === undefined) continue;
      call('tx.step(v, v, v)', label, () => t.step?.(v, v, v));
      call('tx.step(sql, v, 1)', label, () => t.step?.('sql', v, 1));
      call('tx.step(sql, text, v)', label, () => t.step?.('sql', 'text', v));
      call('tx.outgoingHeaders', label, () => t.outgoingHeaders?.());
      call('activeStack(tx, v)', label, () => a.activeStack?.(t, v));
      call('activeStack(tx, [v])', label, () => a.activeStack?.(t, [v, 'at f (x.js:1:1)']));
    }
    call('tx.end(v)', label, () => tx?.end?.(v));
    call('tx.end({error: v})', label, () => tx2?.end?.({ error: v }));
    call('activeStack(v, v)', label, () => a.activeStack?.(v, v));
    call('event(v)', label, () => a.event?.(v));
    call('event({type: v})', label, () => a.event?.({ type: v, message: 'm' }));
    call('event({message: v})', label, () => a.event?.({ type: 't', message: v }));
    call('event({attributes: v})', label, () => a.event?.({ type: 't', message: 'm', attributes: v }));
    call('event({attributes: {k: v}})', label, () => a.event?.({ type: 't', message: 'm', attributes: { k: v } }));
    call('snapshot(v)', label, () => a.snapshot?.(v));
    call('snapshot({k: v})', label, () => a.snapshot?.({ k: v }));
    call('snapshot(ok, v)', label, () => a.snapshot?.({ ok: true }, v));
    call('registerBusinessTransaction(v)', label, () => a.registerBusinessTransaction?.(v));
    call('state', label, () => apm.state);
    call('stats', label, () => apm.stats());
    const p = call('flush(v)', label, () => a.flush?.(v));
    if (p instanceof Promise) flushes.push(p);
    else if (!threw.some((t) => t.startsWith('flush('))) threw.push(`flush(${label}) returned ${String(p)}, not a promise`);
  }
  call('tx.end twice', 'running', () => {
    running.end();
    running.end();
    running.step('sql', 'after end', 1);
  });
  return { threw, flushes };
}

/** connect() with every bad value as the options and as each option; every client is closed again. */
export async function abuseConnect(): Promise<string[]> {
  const threw: string[] = [];
  const keys = ['app', 'socket', 'flushMs', 'bufferBytes', 'maxSeries', 'reconnectMinMs', 'reconnectMaxMs', 'closeTimeoutMs', 'stallTimeoutMs'];
  const closing: Promise<unknown>[] = [];
  for (const { label, value } of badValues()) {
    const attempts: [string, unknown][] = [
      ['connect(v)', value],
      ['connect({all: v})', Object.fromEntries(keys.map((k) => [k, value]))],
    ];
    for (const [what, opts] of attempts) {
      try {
        const apm = (connect as (o: unknown) => ApmClient)(opts);
        closing.push(apm.close());
        closing.push(apm.close());
      } catch (err) {
        threw.push(`${what}(${label}): ${String((err as Error)?.message ?? err)}`);
      }
    }
  }
  await Promise.all(closing);
  return threw;
}
