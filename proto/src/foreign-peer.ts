import { ForeignPeerError } from './errors';

// A peer reached on the wrong port answers in its own protocol: an HTTP server
// sends "HTTP/1.1 400 Bad Request", which read as a frame header declares
// 0x50545448 = 1347703880 bytes. Looking at the first bytes tells the user what
// is wrong instead of reporting an absurd frame size.

/** Bytes kept from the start of a stream for this diagnosis. */
export const FOREIGN_SAMPLE_BYTES = 64;

function printable(b: number): boolean {
  return (b >= 0x20 && b < 0x7f) || b === 0x0d || b === 0x0a || b === 0x09;
}

/**
 * The error to report when the first bytes a peer sent are text (an HTTP status line, an SSH or SMTP
 * banner) rather than an apm-sidecar frame header; null when they may well be a frame.
 */
export function foreignPeer(first: Buffer): ForeignPeerError | null {
  if (first.length < 4) return null;
  for (let i = 0; i < 4; i++) if (!printable(first[i] as number)) return null;
  const text = first.subarray(0, FOREIGN_SAMPLE_BYTES).toString('latin1');
  const line = (text.split(/\r?\n/)[0] ?? '').replace(/[^\x20-\x7e]/g, '?').slice(0, 60);
  return new ForeignPeerError(text.startsWith('HTTP/') ? 'http' : 'text', line);
}
