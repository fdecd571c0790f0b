'use strict';
/**
 * One sending process of the ingest bench (forked by ingest.js; talks to it over IPC).
 *
 *   node ingest-child.js <sidecar|raw> <metrics|traces|events> <socket> <index>
 *
 * Builds its frames first (lib/frames.js), connects, sends a Hello, waits for the
 * Welcome (sidecar mode), reports `ready`, and on `go` writes frames as fast as
 * the receiver takes them, until `stop`.
 *
 * Flow control is the real shim's: write while the socket holds less than 1 MiB
 * (client-shim SOCKET_HIGH_WATER), else wait for 'drain'.
 *
 * metrics  durable frames: each needs a new seq (and a fresh ts, so points land
 *          in the current aggregation interval). A ring of RING copies of the
 *          pre-encoded frames is patched in place (seq: payload bytes 0..5, ts:
 *          6..13) just before a copy is written; a copy is reused only once the
 *          sidecar has acked the frame that last used it (window < RING). In raw
 *          mode nothing decodes the bytes, so the copies are written unpatched
 *          and without an ack window.
 * traces,  best effort, no seq: 256 pre-encoded frames concatenated into one batch
 * events   buffer, written again and again.
 */
const { createConnection } = require('node:net');
const { randomBytes } = require('node:crypto');
const { proto, hello, metricsFrames, traceFrames, eventFrames } = require('./lib/frames');

const [mode, kind, socketPath, indexArg] = process.argv.slice(2);
const index = Number(indexArg);
const RING = 256;
const HIGH_WATER = 1024 * 1024;

let frameBytes; // mean bytes per frame
let unitFrames; // frames per write
let nextBuffer; // () => Buffer | null (null: the ack window is full)
let onAck = () => {};

const stats = { framesWritten: 0, bytesWritten: 0, acked: 0, sidecarErrors: [] };

if (kind === 'metrics') {
  const { frames, pointsPerFrame, samplesPerPoint } = metricsFrames(index);
  frameBytes = frames.reduce((s, f) => s + f.length, 0) / frames.length;
  stats.pointsPerFrame = pointsPerFrame;
  stats.samplesPerPoint = samplesPerPoint;
  const ring = Array.from({ length: RING }, (_, i) => Buffer.from(frames[i % frames.length]));
  let seq = 0;
  let acked = 0;
  unitFrames = 1;
  if (mode === 'sidecar') {
    nextBuffer = () => {
      if (seq - acked >= RING - 1) return null;
      seq++;
      const b = ring[seq % RING];
      b.writeUIntLE(seq, 5, 6);
      b.writeDoubleLE(Date.now(), 11);
      return b;
    };
    onAck = (s) => {
      if (s > acked) acked = s;
      stats.acked = acked;
    };
  } else {
    nextBuffer = () => ring[++seq % RING];
  }
} else {
  const frames = kind === 'traces' ? traceFrames(index) : eventFrames(index);
  const batch = Buffer.concat(frames);
  frameBytes = batch.length / frames.length;
  unitFrames = frames.length;
  nextBuffer = () => batch;
}

let running = false;
let waitingDrain = false;
let waitingAck = false;
let socket = null;

function pump() {
  if (!running || socket === null) return;
  waitingAck = false;
  while (socket.writableLength < HIGH_WATER) {
    const b = nextBuffer();
    if (b === null) {
      waitingAck = true;
      return;
    }
    socket.write(b);
    stats.framesWritten += unitFrames;
    stats.bytesWritten += b.length;
  }
  waitingDrain = true;
}

function connect() {
  const instanceId = randomBytes(16).toString('hex');
  socket = createConnection({ path: socketPath });
  const parser = new proto.FrameParser(proto.DEFAULT_MAX_FRAME_BYTES, (type, payload) => {
    switch (type) {
      case proto.MessageType.Welcome:
        process.send({ type: 'ready', frameBytes });
        break;
      case proto.MessageType.Ack:
        onAck(proto.decodeAck(payload));
        if (waitingAck) pump();
        break;
      case proto.MessageType.Error:
        stats.sidecarErrors.push(proto.decodeError(payload));
        break;
      default:
        break; // state changes
    }
  });
  socket.on('connect', () => {
    socket.write(hello(instanceId, index));
    if (mode === 'raw') process.send({ type: 'ready', frameBytes });
  });
  socket.on('data', (c) => parser.push(c));
  socket.on('drain', () => {
    if (waitingDrain) {
      waitingDrain = false;
      pump();
    }
  });
  socket.on('error', (err) => {
    if (running || !stopped) process.send({ type: 'error', message: `${err.code ?? ''} ${err.message}` });
  });
}

let stopped = false;
process.on('message', (m) => {
  if (m === 'go') {
    running = true;
    pump();
  } else if (m === 'stop') {
    running = false;
    stopped = true;
    process.send({ type: 'done', stats }, () => {
      // end(), not destroy(): what is queued goes out whole, so the receiver never
      // sees a frame cut in half (which it would count as ERR_FRAME_TRUNCATED).
      const bye = () => {
        socket.destroy();
        if (process.connected) process.disconnect();
      };
      socket.once('close', bye);
      setTimeout(bye, 2000).unref();
      socket.end();
    });
  }
});
process.on('disconnect', () => process.exit(0));
connect();
