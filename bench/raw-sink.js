'use strict';
/**
 * The raw-socket baseline of the ingest bench: a plain node:net Unix server that
 * only counts the bytes it reads (no framing, no decoding). Forked by ingest.js;
 * answers `snap` with its byte count over IPC.
 *
 *   node raw-sink.js <socket>
 */
const { createServer } = require('node:net');

let bytes = 0;
let connections = 0;
const server = createServer((s) => {
  connections++;
  s.on('data', (c) => {
    bytes += c.length;
  });
  s.on('error', () => {});
});
server.listen(process.argv[2], () => process.send({ type: 'listening' }));
process.on('message', (m) => {
  if (m === 'snap') process.send({ type: 'snap', bytes, connections });
});
process.on('disconnect', () => process.exit(0));
