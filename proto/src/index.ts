export * from './errors';
export { Reader, Writer, FRAME_HEADER_BYTES } from './buffer';
export { FrameParser, encodeFrame, DEFAULT_MAX_FRAME_BYTES } from './frame';
export type { FrameHandler } from './frame';
export { foreignPeer, FOREIGN_SAMPLE_BYTES } from './foreign-peer';
export * from './messages';
export {
  Sketch,
  SketchRecorder,
  BucketStore,
  BucketRecorder,
  SKETCH_ALPHA,
  SKETCH_MIN_VALUE,
  SKETCH_MIN_KEY,
  SKETCH_MAX_KEY,
  sketchKey,
  sketchValue,
} from './sketch';
export { skipBuckets, mergeBucketBytes } from './sketch-bytes';
export * from './correlation';
export * from './socket-path';
export { type Clock, systemClock } from './clock';
export { LOG_LEVELS, type LogLevelName, REDACTED_LOG_PATHS, logOptions } from './log-options';
export { type HttpLimits, type ServerLimits, serverLimits, NODE_REQUEST_TIMEOUT } from './http-limits';
