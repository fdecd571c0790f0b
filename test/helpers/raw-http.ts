import { request } from 'node:http';
import { type Socket, connect } from 'node:net';

/** What a raw HTTP exchange ended with: the bytes answered, the status line's code, and when the server closed. */
export interface RawExchange {
  /** The first response's status (0: none came). */
  status: number;
  text: string;
  /** Milliseconds from connecting to the server closing the connection. */
  closedAfterMs: number;
  /** Bytes the client managed to write before the close. */
  sent: number;
}

/**
 * Write `bytes` to host:port over plain TCP — all at once, or `first` bytes then `perTick` bytes every
 * `everyMs` (a slow client) — and collect whatever comes back until the server closes. Never ends the writing
 * side itself: a server that waits for more is seen waiting until `giveUpMs`, then the exchange
 * is reported with closedAfterMs = Infinity.
 */
export function rawHttp(
  port: number,
  bytes: Buffer | string,
  o: { everyMs?: number; perTick?: number; first?: number; giveUpMs?: number; host?: string; endWrite?: boolean } = {},
): Promise<RawExchange> {
  const data = Buffer.from(bytes);
  const giveUp = o.giveUpMs ?? 30_000;
  return new Promise((resolve) => {
    const started = Date.now();
    const sock: Socket = connect({ host: o.host ?? '127.0.0.1', port });
    const got: Buffer[] = [];
    let sent = 0;
    let timer: NodeJS.Timeout | null = null;
    const finish = (closedAfterMs: number) => {
      if (timer !== null) clearInterval(timer);
      clearTimeout(stop);
      sock.destroy();
      const text = Buffer.concat(got).toString('latin1');
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(text);
      resolve({ status: m ? Number(m[1]) : 0, text, closedAfterMs, sent });
    };
    const stop = setTimeout(() => finish(Number.POSITIVE_INFINITY), giveUp);
    sock.on('data', (d: Buffer) => got.push(d));
    sock.on('error', () => undefined);
    sock.on('close', () => finish(Date.now() - started));
    sock.on('connect', () => {
      if (o.everyMs === undefined) {
        // endWrite: the client says it has nothing more (the server answers what it has, then closes).
        if (o.endWrite === true) sock.end(data);
        else sock.write(data);
        sent = data.length;
        return;
      }
      const step = o.perTick ?? 1;
      if (o.first !== undefined) {
        sock.write(data.subarray(0, o.first));
        sent = Math.min(data.length, o.first);
      }
      const tick = () => {
        if (sent >= data.length || sock.destroyed) return;
        sock.write(data.subarray(sent, sent + step));
        sent = Math.min(data.length, sent + step);
      };
      if (o.first === undefined) tick();
      timer = setInterval(tick, o.everyMs);
    });
  });
}

/** One plain GET; resolves with its status and how long it took (ms). Rejects on a connection error. */
export function timedGet(port: number, path: string): Promise<{ status: number; ms: number }> {
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, ms: Date.now() - t0 }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** An arbitrary request (method, path, headers, body) over a fresh connection; resolves with the status and the body. */
export function httpRequest(
  port: number,
  o: { method: string; path: string; headers?: Record<string, string>; body?: Buffer },
): Promise<{ status: number; body: string; headers: Record<string, unknown> }> {
  // node:http's client frames a GET body only when told its length.
  const headers = { ...o.headers, ...(o.body !== undefined && { 'content-length': String(o.body.length) }) };
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method: o.method, path: o.path, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8'), headers: res.headers }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(o.body);
  });
}
