import type { SidecarState } from '@apm-sidecar/proto';
import type { PackKind } from '../pack';

/**
 * Where a pack of each kind goes in each state: DESIGN §6 "What is kept, by state" as data.
 *
 *   queue1  sent in replay order; metrics and registrations are also in SQLite (retention)
 *   queue2  traces and active stacks, bounded, drops counted
 *   ring    the last `event_replay_window_ms` of events and snapshots, posted on return to active
 *   drop    not kept; counted under `reason`
 *
 * Metrics and registrations are retained in every state (their durability is the retention's
 * job, not the state's). `connecting` keeps what `reconnecting` keeps; `stopped` keeps what
 * `standby` keeps (the collector is away and nobody is trying to reach it).
 */
export type Keep = 'queue1' | 'queue2' | 'ring' | { readonly drop: string };

type Row = Readonly<Record<SidecarState, Keep>>;

const RETAINED: Row = {
  connecting: 'queue1',
  active: 'queue1',
  reconnecting: 'queue1',
  standby: 'queue1',
  muted: 'queue1',
  stopped: 'queue1',
};

/** No transaction detection in standby, muted or stopped: traces are not produced, queue2 is dropped. */
const TRANSACTIONS: Row = {
  connecting: 'queue2',
  active: 'queue2',
  reconnecting: 'queue2',
  standby: { drop: 'standby' },
  muted: { drop: 'muted' },
  stopped: { drop: 'stopped' },
};

const EVENTS: Row = {
  connecting: 'ring',
  active: 'queue1',
  reconnecting: 'ring',
  standby: 'ring',
  muted: { drop: 'muted' },
  stopped: 'ring',
};

export const KEEP_POLICY: Readonly<Record<PackKind, Row>> = {
  metrics: RETAINED,
  btRegistration: RETAINED,
  trace: TRANSACTIONS,
  activeStack: TRANSACTIONS,
  event: EVENTS,
  snapshot: EVENTS,
};

export function keepPolicy(kind: PackKind, state: SidecarState): Keep {
  return KEEP_POLICY[kind][state];
}

/** Entering a state whose policy drops traces drops what waits in queue2 too. */
export function dropsQueue2(state: SidecarState): boolean {
  return typeof keepPolicy('trace', state) === 'object';
}
