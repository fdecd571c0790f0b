'use strict';
/**
 * The floor of the handshake bench: a plain node:net TCP server that answers each
 * request with a reply of the asked size, and does nothing else (no crypto, no store).
 *
 *   request := u32le length of what follows | u32le reply size | filler
 *   reply   := reply size bytes
 *
 * A separate process, like the collector, so that the client and the server each
 * have their own event loop. Prints {"port": N} on stdout when listening; exits on
 * SIGTERM or when stdin ends.
 */
const { createServer } = require('node:net');

const server = createServer((socket) => {
  socket.setNoDelay(true);
  let buf = Buffer.alloc(0);
  socket.on('data', (chunk) => {
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
    while (buf.length >= 4) {
      const len = buf.readUInt32LE(0);
      if (buf.length < 4 + len) break;
      const replyBytes = buf.readUInt32LE(4);
      buf = buf.subarray(4 + len);
      socket.write(Buffer.alloc(replyBytes, 0x5a));
    }
  });
  socket.on('error', () => {});
});
server.listen(0, '127.0.0.1', () => process.stdout.write(`${JSON.stringify({ port: server.address().port })}\n`));
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
process.on('SIGTERM', () => process.exit(0));
