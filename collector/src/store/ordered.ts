import type { AgentRef } from '../types';
import { agentKey } from '../types';
import type { CollectorStore } from './contract';

/**
 * A store whose writes run on a pool of connections may commit two writes made one after the
 * other in either order: an agent's 'disconnected' could land after the 'live' of its next
 * session. This wrapper keeps each agent's state and license writes in call order (a write
 * starts when the agent's previous one settled); other agents' writes still run in parallel.
 * The SQLite store needs none of it: each of its writes has committed when the call returns.
 */
export function orderedByAgent(store: CollectorStore): CollectorStore {
  const pending = new Map<string, Promise<unknown>>();
  const inOrder = <T>(agent: AgentRef, write: () => Promise<T>): Promise<T> => {
    const key = agentKey(agent);
    const before = pending.get(key);
    const p = before === undefined ? write() : before.then(write, write);
    const tail = p.then(
      () => {},
      () => {},
    );
    pending.set(key, tail);
    void tail.then(() => {
      if (pending.get(key) === tail) pending.delete(key);
    });
    return p;
  };
  const ordered: Partial<CollectorStore> = {
    agentConnected: (projectId, info, at, collectorId) =>
      inOrder({ projectId, agentId: info.agentId }, () => store.agentConnected(projectId, info, at, collectorId)),
    connectAgent: (projectId, info, at, collectorId, releaseMs) =>
      inOrder({ projectId, agentId: info.agentId }, () => store.connectAgent(projectId, info, at, collectorId, releaseMs)),
    setAgentState: (agent, to, cause, collectorId) => inOrder(agent, () => store.setAgentState(agent, to, cause, collectorId)),
    acquireLicense: (agent, at, releaseMs) => inOrder(agent, () => store.acquireLicense(agent, at, releaseMs)),
    agentLicensed: (agent, licensed) => inOrder(agent, () => store.agentLicensed(agent, licensed)),
    close: async () => {
      await Promise.all([...pending.values()]);
      await store.close();
    },
  };
  return new Proxy(store, {
    get(target, prop, receiver) {
      if (typeof prop === 'string' && Object.hasOwn(ordered, prop)) return ordered[prop as keyof CollectorStore];
      const v: unknown = Reflect.get(target, prop, receiver);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
}
