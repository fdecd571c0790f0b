import { type Clock, systemClock } from './clock';
import { type AgentRef, agentKey } from './types';

/**
 * The license pool (`--licenses N`, 0 = unlimited). A license belongs to one
 * agent identity, (project, agent_id). An agent keeps its license while
 * connected and for `releaseMs` after it disconnects, so a brief outage does
 * not hand its seat to someone else; after that the seat is free.
 */
export class LicensePool {
  private readonly holders = new Map<string, { ref: AgentRef; releaseTimer: unknown }>();

  constructor(
    private readonly capacity: number,
    private readonly releaseMs: number,
    private readonly onRelease: (agent: AgentRef) => void = () => {},
    private readonly clock: Clock = systemClock,
  ) {}

  get held(): number {
    return this.holders.size;
  }

  /** Take (or keep) a license for an agent that just connected. */
  acquire(agent: AgentRef): { granted: boolean; reason: string } {
    const key = agentKey(agent);
    const h = this.holders.get(key);
    if (h !== undefined) {
      if (h.releaseTimer !== null) this.clock.clearTimeout(h.releaseTimer);
      h.releaseTimer = null;
      return { granted: true, reason: 'license kept' };
    }
    if (this.capacity > 0 && this.holders.size >= this.capacity) {
      return { granted: false, reason: `all ${this.capacity} licenses are in use` };
    }
    this.holders.set(key, { ref: { projectId: agent.projectId, agentId: agent.agentId }, releaseTimer: null });
    return { granted: true, reason: this.capacity === 0 ? 'unlimited licenses' : `license ${this.holders.size} of ${this.capacity}` };
  }

  /** The agent disconnected: free its license after releaseMs unless it comes back. */
  disconnected(agent: AgentRef): void {
    const key = agentKey(agent);
    const h = this.holders.get(key);
    if (h === undefined || h.releaseTimer !== null) return;
    h.releaseTimer = this.clock.setTimeout(() => {
      this.holders.delete(key);
      this.onRelease(h.ref);
    }, this.releaseMs);
  }

  close(): void {
    for (const h of this.holders.values()) if (h.releaseTimer !== null) this.clock.clearTimeout(h.releaseTimer);
    this.holders.clear();
  }
}
