import type { SidecarState } from '@apm-sidecar/proto';

/** The shim's view of its link: the sidecar's state, or why it has none. */
export type ShimState = 'connecting' | 'active' | 'standby' | 'muted' | 'disconnected';

export interface ShimStats {
  state: ShimState;
  sent: number;
  acked: number;
  buffered: number;
  bufferedBytes: number;
  dropped: Record<string, number>;
}

/** What a sidecar state means for the app: a stopped sidecar mutes it like a muted one. */
export function shimState(s: SidecarState): ShimState {
  if (s === 'standby') return 'standby';
  if (s === 'muted' || s === 'stopped') return 'muted';
  return 'active';
}
