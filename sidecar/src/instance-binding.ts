import { createHash, timingSafeEqual } from 'node:crypto';

/** What a Hello's (instance id, secret) is to the sidecar. */
export type BindingCheck = 'new' | 'match' | 'mismatch';

/** A hash no secret has: marks instance ids only the sidecar itself may use (e.g. DogStatsD's). */
const RESERVED = Buffer.alloc(0);

/**
 * Instance id → SHA-256 of the secret its shim sent in its first Hello. A
 * later Hello for that id must carry the same secret, so a peer that learns
 * the id (from a log or a pack) still cannot act for the instance: resend its
 * seqs, poison its de-duplication or take its acks.
 *
 * Bounded like the seq tracker: past `max`, the least recently used binding
 * that has no live session is forgotten (its shim is simply bound again at its
 * next Hello). Only hashes are held; the secret never leaves the Hello.
 */
export class InstanceBindings {
  private readonly hashes = new Map<string, Buffer>();

  constructor(
    private readonly isLive: (instanceId: string) => boolean,
    private readonly max = 10000,
  ) {}

  static hash(secret: string): Buffer {
    return createHash('sha256').update(secret, 'utf8').digest();
  }

  get size(): number {
    return this.hashes.size;
  }

  /** No Hello may claim this id. */
  reserve(instanceId: string): void {
    this.hashes.set(instanceId, RESERVED);
  }

  check(instanceId: string, hash: Buffer): BindingCheck {
    const known = this.hashes.get(instanceId);
    if (known === undefined) return 'new';
    if (known === RESERVED || known.length !== hash.length || !timingSafeEqual(known, hash)) return 'mismatch';
    return 'match';
  }

  /** Record (or refresh the recency of) a binding. */
  bind(instanceId: string, hash: Buffer): void {
    // Delete then set keeps Map order = recency, so eviction takes the oldest.
    this.hashes.delete(instanceId);
    this.hashes.set(instanceId, hash);
    let budget = this.hashes.size;
    while (this.hashes.size > this.max && budget-- > 0) {
      const [oldest, h] = this.hashes.entries().next().value as [string, Buffer];
      this.hashes.delete(oldest);
      // A live or reserved instance is kept: move it to the recent end and look further.
      if (h === RESERVED || this.isLive(oldest)) this.hashes.set(oldest, h);
    }
  }
}
