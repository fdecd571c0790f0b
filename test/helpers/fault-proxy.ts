/**
 * A fault proxy on node:net (in the manner of Toxiproxy): a TCP or Unix-socket relay between a
 * client and its target (sidecar → collector, or shim → sidecar) whose toxics (toxics.ts) are set
 * and removed at run time, per direction, and apply to open and new connections alike.
 *
 *   const p = new FaultProxy({ listen: { host: '127.0.0.1', port: 0 }, target: { host, port } });
 *   await p.start();
 *   p.set('latency', { ms: 80, jitter: 40 });       // both ways
 *   p.set('half-open', {}, 'up');                    // client → target silently dead
 *   p.clear('latency'); p.clear();                   // one toxic, or all
 *
 * Each direction of a connection is a Pipe:
 *
 *   source ─data─▶ [half-open: discard] ─▶ [close-after: cut] ─▶ FrameCutter ─▶ [frame toxics]
 *          ─▶ queue (due time: latency) ─▶ pump (stall, bandwidth, backpressure) ─▶ destination
 *
 * The queue is bounded: above HIGH_WATER bytes the source is paused, so a slow direction backs up
 * into the sender's TCP window instead of into this process.
 */
import { type Server, type Socket, createServer, connect as netConnect } from 'node:net';
import { DEFAULT_DIR, type Dir, type DirOption, type Toxic, type ToxicName, type ToxicOptions, dirsOf, formatToxic } from './toxics';

export type Endpoint = { host: string; port: number } | { path: string };

export interface FaultProxyOptions {
  listen: Endpoint;
  target: Endpoint;
  /** Random numbers for jitter (a seeded one replays a run). */
  random?: () => number;
}

export interface ProxyStats {
  accepted: number;
  open: number;
  bytes: Record<Dir, number>;
  /** Bytes a half-open direction swallowed. */
  discarded: Record<Dir, number>;
  framesDropped: number;
  framesDuplicated: number;
  framesReordered: number;
  /** Connections closed by close-after, and reset by reset. */
  closedAfterBytes: number;
  resets: number;
  /** FINs passed on, and when the last one was (slow-close delays it). */
  fins: Record<Dir, number>;
  lastFinAt: Record<Dir, number>;
}

const HIGH_WATER = 1 << 20;
const LOW_WATER = 1 << 18;
/** A reordered frame with no successor is let go after this long (the sender may be waiting for its ack). */
const REORDER_HOLD_MS = 250;
const SEALED_TEXT = 0x30;
const SEALED_NUMERIC = 0x31;

type Active = { [K in ToxicName]?: ToxicOptions[K] };

export class FaultProxy {
  readonly stats: ProxyStats = {
    accepted: 0,
    open: 0,
    bytes: { up: 0, down: 0 },
    discarded: { up: 0, down: 0 },
    framesDropped: 0,
    framesDuplicated: 0,
    framesReordered: 0,
    closedAfterBytes: 0,
    resets: 0,
    fins: { up: 0, down: 0 },
    lastFinAt: { up: 0, down: 0 },
  };
  /** The toxics in force, per direction. */
  readonly toxics: Record<Dir, Active> = { up: {}, down: {} };
  readonly random: () => number;
  private server: Server | null = null;
  private readonly conns = new Set<Conn>();
  address: Endpoint;

  constructor(private readonly opts: FaultProxyOptions) {
    this.random = opts.random ?? Math.random;
    this.address = opts.listen;
  }

  /** Listen; resolves with the address bound (the port picked for port 0). */
  start(): Promise<Endpoint> {
    const server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (client) => this.accept(client));
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      const done = (): void => {
        server.off('error', reject);
        const a = server.address();
        this.address = typeof a === 'string' || a === null ? this.opts.listen : { host: a.address, port: a.port };
        resolve(this.address);
      };
      if ('path' in this.opts.listen) server.listen(this.opts.listen.path, done);
      else server.listen(this.opts.listen.port, this.opts.listen.host, done);
    });
  }

  get port(): number {
    return 'port' in this.address ? this.address.port : 0;
  }

  /** Set (or replace) a toxic, in `dir` (its default when not given); open connections feel it at once. */
  set<K extends ToxicName>(name: K, opts: ToxicOptions[K], dir: DirOption = DEFAULT_DIR[name]): void {
    for (const d of dirsOf(dir)) (this.toxics[d] as Record<string, unknown>)[name] = opts;
    for (const c of this.conns) c.toxicsChanged();
  }

  /** Apply a toxic in its parsed form (toxics.ts parseToxic). */
  apply(t: Toxic): void {
    this.set(t.name, t.opts as never, t.dir ?? DEFAULT_DIR[t.name]);
  }

  /** Remove one toxic (in `dir`, default both ways), or every toxic. */
  clear(name?: ToxicName, dir: DirOption = 'both'): void {
    for (const d of dirsOf(dir)) {
      if (name === undefined) this.toxics[d] = {};
      else delete this.toxics[d][name];
    }
    for (const c of this.conns) c.toxicsChanged();
  }

  /** The toxics in force, in their text form. */
  describe(): string[] {
    const out: string[] = [];
    for (const d of ['up', 'down'] as const) for (const [name, opts] of Object.entries(this.toxics[d])) out.push(formatToxic({ name, opts, dir: d } as Toxic));
    return out;
  }

  /** Reset every open connection now (RST to both peers). */
  resetAll(): void {
    for (const c of [...this.conns]) c.reset();
  }

  async close(): Promise<void> {
    for (const c of [...this.conns]) c.destroy();
    const s = this.server;
    this.server = null;
    if (s !== null) await new Promise<void>((r) => s.close(() => r()));
  }

  private accept(client: Socket): void {
    this.stats.accepted++;
    const target =
      'path' in this.opts.target ? netConnect({ path: this.opts.target.path, allowHalfOpen: true }) : netConnect({ ...this.opts.target, allowHalfOpen: true });
    if ('port' in this.opts.target) target.setNoDelay(true);
    const c = new Conn(this, client, target, () => {
      this.conns.delete(c);
      this.stats.open = this.conns.size;
    });
    this.conns.add(c);
    this.stats.open = this.conns.size;
  }
}

/** One proxied connection: two sockets, two pipes, the connection-wide toxics (reset, close-after). */
class Conn {
  private readonly pipes: Record<Dir, Pipe>;
  private readonly openedAt = Date.now();
  private resetTimer: NodeJS.Timeout | null = null;
  private done = false;

  constructor(
    readonly proxy: FaultProxy,
    readonly client: Socket,
    readonly target: Socket,
    private readonly onGone: () => void,
  ) {
    this.pipes = { up: new Pipe(this, 'up', client, target), down: new Pipe(this, 'down', target, client) };
    for (const [s, other] of [
      [client, target],
      [target, client],
    ] as const) {
      s.on('error', (err: NodeJS.ErrnoException) => {
        // A reset on one side is passed on as a reset; any other failure closes the other side.
        if (err.code === 'ECONNRESET') other.resetAndDestroy();
        else other.destroy();
        this.gone();
      });
      s.on('close', () => this.socketClosed());
    }
    // The target connects while the client's bytes wait (pauseOnConnect): none is lost or reordered.
    target.once('connect', () => this.toxicsChanged());
    this.toxicsChanged();
  }

  toxicsChanged(): void {
    if (this.done) return;
    this.pipes.up.toxicsChanged();
    this.pipes.down.toxicsChanged();
    this.scheduleReset();
  }

  /** close-after: both sockets closed (FIN after what was written); what the other way still queues is dropped. */
  cut(): void {
    if (this.done) return;
    this.proxy.stats.closedAfterBytes++;
    for (const s of [this.client, this.target]) {
      s.end();
      // A peer that never closes its side is not waited for.
      setTimeout(() => s.destroy(), 1000).unref();
    }
    this.gone();
  }

  reset(): void {
    if (this.done) return;
    this.proxy.stats.resets++;
    this.client.resetAndDestroy();
    if (this.target.connecting) this.target.destroy();
    else this.target.resetAndDestroy();
    this.gone();
  }

  destroy(): void {
    this.client.destroy();
    this.target.destroy();
    this.gone();
  }

  private scheduleReset(): void {
    const r = this.proxy.toxics.up.reset ?? this.proxy.toxics.down.reset;
    if (r === undefined) {
      if (this.resetTimer !== null) clearTimeout(this.resetTimer);
      this.resetTimer = null;
      return;
    }
    if (this.resetTimer !== null) return;
    const wait = Math.max(0, this.openedAt + (r.afterMs ?? 0) - Date.now());
    this.resetTimer = setTimeout(() => this.reset(), wait);
  }

  /** Both sockets fully closed: the connection is over. (A FIN a half-open direction swallowed keeps it open, as on a dead path.) */
  private socketClosed(): void {
    if (this.client.destroyed && this.target.destroyed) this.gone();
  }

  private gone(): void {
    if (this.done) return;
    this.done = true;
    if (this.resetTimer !== null) clearTimeout(this.resetTimer);
    this.pipes.up.stop();
    this.pipes.down.stop();
    this.onGone();
  }
}

interface Item {
  buf: Buffer;
  due: number;
}

/** One direction of a connection. */
class Pipe {
  private readonly queue: Item[] = [];
  private queued = 0;
  private lastDue = 0;
  private bwFreeAt = 0;
  private timer: NodeJS.Timeout | null = null;
  private waitingDrain = false;
  private sourceEnded = false;
  private finSent = false;
  private forwarded = 0;
  private readonly cutter = new FrameCutter();
  /** The next byte starts a frame. */
  private atBoundary = true;
  /** A frame being gathered whole for the frame toxics. */
  private partial: Buffer[] | null = null;
  private held: { frame: Buffer; timer: NodeJS.Timeout } | null = null;
  private stopped = false;
  /** close-after was reached: once the queue is delivered the connection is closed. */
  private cutting = false;

  constructor(
    private readonly conn: Conn,
    private readonly dir: Dir,
    private readonly src: Socket,
    private readonly dst: Socket,
  ) {
    src.on('data', (d: Buffer) => this.onData(d));
    src.on('end', () => {
      this.sourceEnded = true;
      // A frame cut short by the peer's FIN goes on as it is, like the bytes of any other stream.
      if (this.partial !== null && !this.stopped) this.enqueue(Buffer.concat(this.partial));
      this.partial = null;
      this.pump();
    });
    dst.on('drain', () => {
      this.waitingDrain = false;
      this.pump();
    });
  }

  private get t(): Active {
    return this.conn.proxy.toxics[this.dir];
  }

  /** The source ended and everything from it was delivered (or discarded). */
  get finished(): boolean {
    return this.sourceEnded && this.queue.length === 0 && this.held === null;
  }

  toxicsChanged(): void {
    if (this.stopped) return;
    this.flow();
    this.pump();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    if (this.held !== null) clearTimeout(this.held.timer);
    this.held = null;
    this.queue.length = 0;
    this.queued = 0;
  }

  /** Read from the source unless stalled, the target is not connected yet, or the queue is full. */
  private flow(): void {
    const stalled = this.t.stall !== undefined;
    const connecting = this.conn.target.connecting;
    if (stalled || connecting || this.queued > HIGH_WATER) this.src.pause();
    else if (this.queued < LOW_WATER) this.src.resume();
  }

  private onData(chunk: Buffer): void {
    if (this.stopped) return;
    const t = this.t;
    if (t['half-open'] !== undefined) {
      this.conn.proxy.stats.discarded[this.dir] += chunk.length;
      return;
    }
    const limit = t['close-after'];
    if (this.cutting) return;
    if (limit !== undefined && this.forwarded + chunk.length > limit.bytes) {
      // Deliver exactly the allowed bytes (a frame cut anywhere) after what is queued, then close.
      const part = chunk.subarray(0, Math.max(0, limit.bytes - this.forwarded));
      this.forwarded += part.length;
      this.cutting = true;
      this.src.pause();
      this.enqueue(Buffer.concat([...(this.partial ?? []), part]));
      this.partial = null;
      return;
    }
    this.forwarded += chunk.length;
    // Whole frames are gathered while a frame toxic is set or a reordered frame waits for its place.
    const framed = t['frame-drop'] !== undefined || t['frame-duplicate'] !== undefined || t['frame-reorder'] !== undefined || this.held !== null;
    for (const piece of this.cutter.cut(chunk)) {
      const starts = this.atBoundary;
      this.atBoundary = piece.end;
      if (this.partial === null && !(framed && starts)) {
        this.enqueue(piece.buf);
        continue;
      }
      this.partial = [...(this.partial ?? []), piece.buf];
      if (piece.end) {
        const frame = Buffer.concat(this.partial);
        this.partial = null;
        this.onFrame(frame);
      }
    }
    this.flow();
  }

  /** Frame toxics pick sealed frames by their counter (u64be after the 5-byte header). */
  private onFrame(frame: Buffer): void {
    const t = this.t;
    const counter =
      frame.length >= 13 && (frame[4] === SEALED_TEXT || frame[4] === SEALED_NUMERIC) ? frame.readUInt32BE(5) * 2 ** 32 + frame.readUInt32BE(9) : 0;
    const hit = (every: number | undefined): boolean => every !== undefined && counter > 0 && counter % every === 0;
    const stats = this.conn.proxy.stats;
    if (hit(t['frame-drop']?.every)) {
      stats.framesDropped++;
      return;
    }
    if (hit(t['frame-reorder']?.every) && this.held === null) {
      stats.framesReordered++;
      this.held = { frame, timer: setTimeout(() => this.releaseHeld(), REORDER_HOLD_MS) };
      return;
    }
    this.enqueue(frame);
    if (hit(t['frame-duplicate']?.every)) {
      stats.framesDuplicated++;
      this.enqueue(Buffer.from(frame));
    }
    this.releaseHeld();
  }

  private releaseHeld(): void {
    const h = this.held;
    if (h === null) return;
    clearTimeout(h.timer);
    this.held = null;
    this.enqueue(h.frame);
  }

  private enqueue(buf: Buffer): void {
    const lat = this.t.latency;
    let due = Date.now();
    if (lat !== undefined) {
      const jitter = lat.jitter ?? 0;
      due += Math.max(0, lat.ms + (this.conn.proxy.random() * 2 - 1) * jitter);
    }
    // Bytes on one connection stay in order, whatever each one's delay.
    due = Math.max(due, this.lastDue);
    this.lastDue = due;
    this.queue.push({ buf, due });
    this.queued += buf.length;
    this.pump();
  }

  private writeNow(buf: Buffer): void {
    if (buf.length === 0 || this.dst.destroyed) return;
    this.conn.proxy.stats.bytes[this.dir] += buf.length;
    if (!this.dst.write(buf)) this.waitingDrain = true;
  }

  /** Deliver what is due, at the bandwidth allowed, unless stalled or the destination is full. */
  private pump(): void {
    if (this.stopped || this.timer !== null) return;
    const t = this.t;
    while (this.queue.length > 0) {
      if (t.stall !== undefined || this.waitingDrain || this.conn.target.connecting) return;
      const head = this.queue[0] as Item;
      const now = Date.now();
      const bw = t.bandwidth?.bytesPerSec;
      const wait = Math.max(head.due - now, bw === undefined ? 0 : this.bwFreeAt - now);
      if (wait > 0) {
        this.timer = setTimeout(() => {
          this.timer = null;
          this.pump();
        }, wait);
        return;
      }
      let out = head.buf;
      if (bw !== undefined) {
        // Slices of at most 1/20 s of the rate, so the rate holds over short spans too.
        const slice = Math.max(1, Math.floor(bw / 20));
        out = head.buf.subarray(0, slice);
        this.bwFreeAt = Math.max(this.bwFreeAt, now) + (out.length / bw) * 1000;
      }
      if (out.length === head.buf.length) this.queue.shift();
      else head.buf = head.buf.subarray(out.length);
      this.queued -= out.length;
      this.writeNow(out);
    }
    if (this.cutting) {
      this.conn.cut();
      return;
    }
    this.flow();
    if (this.finished && !this.finSent) this.passFin();
  }

  /** The source's FIN reaches the destination (late with slow-close, never through a half-open direction). */
  private passFin(): void {
    const t = this.t;
    if (t['half-open'] !== undefined) return;
    this.finSent = true;
    const slow = t['slow-close']?.ms ?? 0;
    const fin = (): void => {
      if (this.dst.destroyed) return;
      const stats = this.conn.proxy.stats;
      stats.fins[this.dir]++;
      stats.lastFinAt[this.dir] = Date.now();
      this.dst.end();
    };
    if (slow > 0) setTimeout(fin, slow);
    else fin();
  }
}

/**
 * Finds the frame boundaries of a byte stream (u32le length | u8 type | payload) without holding
 * bytes back: each chunk is cut where frames end. The pipe gathers whole frames only while a frame
 * toxic needs them, so a stream that is not framed (or a proxy with no frame toxic) is never delayed.
 */
class FrameCutter {
  /** Bytes still to come of the current frame after its length field; 0 while reading a length. */
  private need = 0;
  private readonly head = Buffer.alloc(4);
  private headLen = 0;

  cut(chunk: Buffer): { buf: Buffer; end: boolean }[] {
    const out: { buf: Buffer; end: boolean }[] = [];
    let off = 0;
    let start = 0;
    while (off < chunk.length) {
      if (this.need === 0) {
        const take = Math.min(4 - this.headLen, chunk.length - off);
        chunk.copy(this.head, this.headLen, off, off + take);
        this.headLen += take;
        off += take;
        if (this.headLen < 4) break;
        this.headLen = 0;
        this.need = this.head.readUInt32LE(0);
        if (this.need > 0) continue;
      } else {
        const take = Math.min(this.need, chunk.length - off);
        off += take;
        this.need -= take;
        if (this.need > 0) continue;
      }
      out.push({ buf: chunk.subarray(start, off), end: true });
      start = off;
    }
    if (start < chunk.length) out.push({ buf: chunk.subarray(start), end: false });
    return out;
  }
}
