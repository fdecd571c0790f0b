export * from './errors';
export { Reader, Writer, FRAME_HEADER_BYTES } from './buffer';
export { FrameParser, encodeFrame, DEFAULT_MAX_FRAME_BYTES } from './frame';
export type { FrameHandler } from './frame';
export * from './messages';
export { Sketch, BucketStore, SKETCH_ALPHA, SKETCH_MIN_VALUE, SKETCH_MIN_KEY, SKETCH_MAX_KEY, sketchKey, sketchValue } from './sketch';
export * from './correlation';
export * from './socket-path';
export { type Clock, systemClock } from './clock';
