import { UnknownMessageTypeError } from './errors';
import { decodeHello, decodeHeartbeat } from './ipc/control';
import { type MetricsMessage, type Series, decodeMetrics } from './ipc/metrics';
import { decodeActiveStack, decodeBtRegistration, decodeEvent, decodeSnapshot } from './ipc/packs';
import { decodeTrace } from './ipc/trace';
import { type ActiveStackPack, type BtRegistration, type EventPack, type Hello, MessageType, type ProfilePack, type SnapshotPack } from './ipc/types';

// The IPC messages, one file a job under ipc/: shared constants and shapes, the
// JSON field validators, session/control messages, text packs, the binary trace
// and metrics codecs. Importers use this module (or the package root) only.
export * from './ipc/types';
export { type Obj, parseJson } from './ipc/json';
export * from './ipc/control';
export * from './ipc/packs';
export * from './ipc/trace';
export * from './ipc/metrics';

export type ShimToSidecar =
  | { type: 'Hello'; body: Hello }
  | { type: 'Metrics'; body: MetricsMessage }
  | { type: 'Trace'; body: ProfilePack }
  | { type: 'ActiveStack'; body: ActiveStackPack }
  | { type: 'Event'; body: EventPack }
  | { type: 'Snapshot'; body: SnapshotPack }
  | { type: 'BtRegistration'; body: BtRegistration }
  | { type: 'Heartbeat'; body: number };

/** Decode any message a shim may send. Throws UnknownMessageTypeError / MalformedMessageError. */
export function decodeShimMessage(type: number, p: Buffer, seriesCache?: Map<string, Series>): ShimToSidecar {
  switch (type) {
    case MessageType.Hello:
      return { type: 'Hello', body: decodeHello(p) };
    case MessageType.Metrics:
      return { type: 'Metrics', body: decodeMetrics(p, seriesCache) };
    case MessageType.Trace:
      return { type: 'Trace', body: decodeTrace(p) };
    case MessageType.ActiveStack:
      return { type: 'ActiveStack', body: decodeActiveStack(p) };
    case MessageType.Event:
      return { type: 'Event', body: decodeEvent(p) };
    case MessageType.Snapshot:
      return { type: 'Snapshot', body: decodeSnapshot(p) };
    case MessageType.BtRegistration:
      return { type: 'BtRegistration', body: decodeBtRegistration(p) };
    case MessageType.Heartbeat:
      return { type: 'Heartbeat', body: decodeHeartbeat(p) };
    default:
      throw new UnknownMessageTypeError(type);
  }
}
