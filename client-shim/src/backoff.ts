/**
 * Reconnect delay to the sidecar: exponential with full jitter, capped.
 * attempt 0 → [min, 2·min), attempt n → [min, min(max, min·2^(n+1))).
 * Pure, so it is tested without sockets or clocks.
 */
export function backoffDelay(attempt: number, minMs: number, maxMs: number, random: () => number = Math.random): number {
  const ceiling = Math.min(maxMs, minMs * 2 ** Math.min(attempt + 1, 30));
  return Math.round(minMs + random() * Math.max(0, ceiling - minMs));
}
