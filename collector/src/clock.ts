// The agent side's clock is the one shared with the sidecar's link (proto/src/clock.ts).
export { type Clock, systemClock } from '@apm-sidecar/proto';
