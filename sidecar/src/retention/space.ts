import { statfsSync } from 'node:fs';
import type { SpaceUsage } from './store';

/**
 * The retention's space bounds (DESIGN §8):
 *
 *   retention_max_bytes       rows in the database may use at most this much
 *   retention_min_free_bytes  this much must stay free on the filesystem, counting the
 *                             database's own free pages as free (SQLite reuses them
 *                             before growing the file)
 *
 * Beyond either bound the oldest retained metrics are dropped (counted `disk_full`),
 * down to a low-water mark a tenth of the bound inside it, and the episode ends only
 * below that mark: a steady inflow during an outage does not make it start and end
 * (and log) every second.
 */
export interface SpaceLimits {
  maxBytes: number;
  minFreeBytes: number;
}

export interface SpaceVerdict {
  /** Bytes of rows to drop to be within both bounds; 0 = within them. */
  excessBytes: number;
  reason: 'max_bytes' | 'min_free' | null;
}

/** Pure: how far beyond its bounds the retention is. `fsFreeBytes` null = unknown (only max_bytes applies). */
export function spaceVerdict(u: SpaceUsage, fsFreeBytes: number | null, limits: SpaceLimits): SpaceVerdict {
  const overMax = Math.max(0, u.usedBytes - limits.maxBytes);
  const underFree = fsFreeBytes === null ? 0 : Math.max(0, limits.minFreeBytes - (fsFreeBytes + u.freelistBytes));
  if (overMax === 0 && underFree === 0) return { excessBytes: 0, reason: null };
  return overMax >= underFree ? { excessBytes: overMax, reason: 'max_bytes' } : { excessBytes: underFree, reason: 'min_free' };
}

/** The bounds a tenth inside: what dropping aims for, and what ends an episode. */
export function lowWater(limits: SpaceLimits): SpaceLimits {
  return { maxBytes: Math.floor(limits.maxBytes * 0.9), minFreeBytes: Math.ceil(limits.minFreeBytes * 1.1) };
}

/** Bytes an unprivileged writer may still use on the filesystem holding `dir`; null when it cannot be asked. */
export function filesystemFreeBytes(dir: string): number | null {
  try {
    const s = statfsSync(dir);
    return s.bavail * s.bsize;
  } catch {
    return null;
  }
}
