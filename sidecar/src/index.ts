export * from './config';
export * from './reconnect-schedule';
export { Aggregator, type AggPoint } from './aggregator';
export { BoundedQueue } from './queue';
export { Sender } from './sender';
export { SeqTracker } from './dedup';
export { Sidecar, type SidecarOptions, SIDECAR_VERSION } from './sidecar';
export type { Pack } from './pack';
export type { Transport } from './transport/transport';
