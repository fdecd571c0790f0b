/**
 * The fault proxy's toxics (test/helpers/fault-proxy.ts): their names, options and directions, and
 * the text form the by-hand CLI and a scenario generator use (`latency=80,jitter=40,dir=up`).
 *
 * Directions: `up` is client → target (shim → sidecar, sidecar → collector), `down` is the reverse.
 *
 *   latency=MS[,jitter=MS]   every chunk (or frame) waits MS ± jitter; order is kept, as on TCP
 *   bandwidth=BYTES_PER_S    the direction carries at most this many bytes a second
 *   stall                    the proxy stops reading (the peer's writes back up in TCP) and forwards nothing
 *   close-after=BYTES        a connection is closed once this many bytes crossed (cut anywhere, mid-frame too)
 *   reset[=AFTER_MS]         every connection is reset (RST both ways) this long after it opened
 *   slow-close=MS            a FIN is passed on this long after it arrived
 *   half-open                the direction is silently dead: its bytes and its FIN vanish, the other flows
 *   frame-drop=EVERY         the sealed upstream frame whose counter is a multiple of EVERY vanishes
 *   frame-duplicate=EVERY    ... is sent twice
 *   frame-reorder=EVERY      ... is sent after the frame that follows it
 *
 * Frame toxics cut on the upstream framing (u32le length | u8 type | payload) and pick sealed frames
 * (Text, Numeric: payload = counter u64be | ciphertext) by their counter, which starts at 1 on every
 * session: each session loses (or repeats, or reorders) its EVERY-th frame, then the receiver's
 * counter check ends it.
 */

export type Dir = 'up' | 'down';
export type DirOption = Dir | 'both';

export interface ToxicOptions {
  latency: { ms: number; jitter?: number };
  bandwidth: { bytesPerSec: number };
  stall: Record<string, never>;
  'close-after': { bytes: number };
  reset: { afterMs?: number };
  'slow-close': { ms: number };
  'half-open': Record<string, never>;
  'frame-drop': { every: number };
  'frame-duplicate': { every: number };
  'frame-reorder': { every: number };
}

export type ToxicName = keyof ToxicOptions;

/** A toxic and where it applies; `dir` defaults per toxic (DEFAULT_DIR). */
export type Toxic = { [K in ToxicName]: { name: K; opts: ToxicOptions[K]; dir?: DirOption } }[ToxicName];

export const TOXIC_NAMES: readonly ToxicName[] = [
  'latency',
  'bandwidth',
  'stall',
  'close-after',
  'reset',
  'slow-close',
  'half-open',
  'frame-drop',
  'frame-duplicate',
  'frame-reorder',
];

/** Frame toxics are meant for the sidecar → collector stream; a half-open link has to name its dead side. */
export const DEFAULT_DIR: Record<ToxicName, DirOption> = {
  latency: 'both',
  bandwidth: 'both',
  stall: 'both',
  'close-after': 'both',
  reset: 'both',
  'slow-close': 'both',
  'half-open': 'up',
  'frame-drop': 'up',
  'frame-duplicate': 'up',
  'frame-reorder': 'up',
};

export function dirsOf(d: DirOption): Dir[] {
  return d === 'both' ? ['up', 'down'] : [d];
}

export function isToxicName(s: string): s is ToxicName {
  return (TOXIC_NAMES as readonly string[]).includes(s);
}

function count(name: string, raw: string | undefined, min: number): number {
  const n = Number(raw);
  if (raw === undefined || raw === '' || !Number.isSafeInteger(n) || n < min)
    throw new Error(`toxic ${name}: expected an integer ≥ ${min}, not ${JSON.stringify(raw)}`);
  return n;
}

/** Build a toxic from its name and fields; throws on a bad value. */
export function makeToxic(name: string, fields: Record<string, string>): Toxic {
  const dirRaw = fields.dir;
  if (dirRaw !== undefined && dirRaw !== 'up' && dirRaw !== 'down' && dirRaw !== 'both') throw new Error(`toxic ${name}: dir must be up, down or both`);
  const dir = dirRaw as DirOption | undefined;
  const v = fields[name];
  const withDir = <T extends Toxic>(t: T): T => (dir === undefined ? t : { ...t, dir });
  switch (name) {
    case 'latency':
      return withDir({ name, opts: { ms: count(name, v, 0), jitter: fields.jitter === undefined ? 0 : count('jitter', fields.jitter, 0) } });
    case 'bandwidth':
      return withDir({ name, opts: { bytesPerSec: count(name, v, 1) } });
    case 'stall':
    case 'half-open':
      // `stall=up` / `half-open=down` name the direction in the value.
      if (v !== undefined && v !== '' && dir === undefined) return makeToxic(name, { ...fields, [name]: '', dir: v });
      return withDir({ name, opts: {} });
    case 'close-after':
      return withDir({ name, opts: { bytes: count(name, v, 0) } });
    case 'reset':
      return withDir({ name, opts: { afterMs: v === undefined || v === '' ? 0 : count(name, v, 0) } });
    case 'slow-close':
      return withDir({ name, opts: { ms: count(name, v, 0) } });
    case 'frame-drop':
    case 'frame-duplicate':
    case 'frame-reorder':
      return withDir({ name, opts: { every: count(name, v, 2) } });
    default:
      throw new Error(`unknown toxic ${JSON.stringify(name)}: one of ${TOXIC_NAMES.join(', ')}`);
  }
}

/** `latency=80,jitter=40,dir=up` → the toxic; the first field names it. */
export function parseToxic(spec: string): Toxic {
  const fields: Record<string, string> = {};
  let name = '';
  for (const part of spec.split(',')) {
    const eq = part.indexOf('=');
    const k = (eq < 0 ? part : part.slice(0, eq)).trim();
    const v = eq < 0 ? '' : part.slice(eq + 1).trim();
    if (k === '') continue;
    if (name === '') name = k;
    fields[k] = v;
  }
  if (name === '') throw new Error('empty toxic');
  return makeToxic(name, fields);
}

/** The text form of a toxic (parseToxic's inverse), for logs and figures. */
export function formatToxic(t: Toxic): string {
  const o = t.opts as Record<string, number | undefined>;
  const main = Object.values(o)[0];
  const rest = Object.entries(o)
    .slice(1)
    .filter(([, v]) => v !== undefined && v !== 0)
    .map(([k, v]) => `,${k}=${v}`)
    .join('');
  return `${t.name}${main === undefined ? '' : `=${main}`}${rest},dir=${t.dir ?? DEFAULT_DIR[t.name]}`;
}
