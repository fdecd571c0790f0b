// The Link's clock is the one shared with the collector (proto/src/clock.ts).
export { type Clock, systemClock } from '@apm-sidecar/proto';
