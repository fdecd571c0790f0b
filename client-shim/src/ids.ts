/**
 * Random hex ids drawn from a pool refilled in blocks (one syscall per 4 KiB).
 * node:crypto is loaded at the first id (when the app connects), not when the
 * app imports the shim: loading it is most of an import's cost.
 */
const POOL_BYTES = 4096;
let pool: Buffer | null = null;
let offset = POOL_BYTES;
let fill: ((b: Buffer) => void) | null = null;

export function randomHex(bytes: number): string {
  if (pool === null) pool = Buffer.allocUnsafe(POOL_BYTES);
  if (offset + bytes > POOL_BYTES) {
    fill ??= (require('node:crypto') as typeof import('node:crypto')).randomFillSync;
    fill(pool);
    offset = 0;
  }
  const s = pool.toString('hex', offset, offset + bytes);
  offset += bytes;
  return s;
}
