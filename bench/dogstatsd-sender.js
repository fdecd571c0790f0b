'use strict';
/**
 * The sender of bench (i), in its own process: the datagrams of lib/dogstatsd-lines.js to one UDP
 * receiver at an offered rate in lines per second, paced every 2 ms against the wall clock (a late
 * tick sends what is due, so the mean rate holds under load).
 *
 *   forked by dogstatsd.js with argv: <port> <series>; then messages
 *   { type: 'go', rate, seconds } → sends → { type: 'done', packets, lines, bytes, lateMs }
 */
const { createSocket } = require('node:dgram');
const { buildPackets } = require('./lib/dogstatsd-lines');

const port = Number(process.argv[2]);
const series = Number(process.argv[3]);
const { packets } = buildPackets({ series, packets: Math.max(2000, Math.ceil(series / 10)) });
const sock = createSocket({ type: 'udp4', sendBufferSize: 4 * 1024 * 1024 });
sock.connect(port, '127.0.0.1', () => process.send({ type: 'ready', packets: packets.length }));
let next = 0;

function go(rate, seconds) {
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  let lines = 0;
  let bytes = 0;
  let sent = 0;
  let lateMs = 0;
  const tick = () => {
    const now = performance.now();
    const due = (rate * (Math.min(now, end) - t0)) / 1000;
    while (lines < due) {
      const p = packets[next];
      next = (next + 1) % packets.length;
      sock.send(p.buf);
      lines += p.lines;
      bytes += p.buf.length;
      sent++;
    }
    if (now >= end) {
      // Let the socket hand the last datagrams to the kernel before reporting.
      setTimeout(() => process.send({ type: 'done', packets: sent, lines, bytes, lateMs }), 50);
      return;
    }
    const wait = 2 - (performance.now() - now);
    if (wait < 0) lateMs -= wait;
    setTimeout(tick, Math.max(0, wait));
  };
  tick();
}

process.on('message', (m) => {
  if (m.type === 'go') go(m.rate, m.seconds);
});
process.on('disconnect', () => process.exit(0));
