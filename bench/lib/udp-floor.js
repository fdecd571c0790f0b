'use strict';
/**
 * The floor of bench (i): a Node UDP receiver with the same 4 MiB receive buffer that does the least
 * a StatsD server must do with a datagram: take it and count its lines ('\n' + 1, found with the
 * native indexOf), nothing parsed. Forked by dogstatsd.js with argv <port>; answers 'counts' over IPC.
 */
const { createSocket } = require('node:dgram');

let lines = 0;
let packets = 0;
const s = createSocket({ type: 'udp4', recvBufferSize: 4 * 1024 * 1024 }, (buf) => {
  packets++;
  let n = 1;
  for (let i = buf.indexOf(10); i >= 0; i = buf.indexOf(10, i + 1)) n++;
  lines += n;
});
s.bind(Number(process.argv[2]), '127.0.0.1', () => process.send({ type: 'ready' }));
process.on('message', (m) => {
  if (m === 'counts') process.send({ type: 'counts', lines, packets });
});
process.on('disconnect', () => process.exit(0));
