'use strict';
/**
 * The pre-authentication attacker of bench/preauth.js, in its own process so its work does not run
 * on the honest agent's event loop.
 *
 *   node bench/lib/preauth-attacker.js PORT HTTP_PORT CONNS TUNNEL_REQS
 *
 * Keeps CONNS TCP connections to the agent port, half of them each declaring an 8 MiB ClientHello
 * and sending 16 KiB of it every 100 ms, half declaring 4000 bytes (under the 4 KiB pre-auth limit)
 * and sending one byte every 100 ms (a slow-loris the frame limit cannot stop); and TUNNEL_REQS
 * first tunnel requests declaring an 8 MiB body, sent 16 KiB every 100 ms. A connection or request
 * that the collector closes is opened again 100 ms later, as a real attacker would. Every second it
 * prints a JSON line: { open, opened, closed, bytes }.
 */
const { request } = require('node:http');
const { connect } = require('node:net');

const [port, httpPort, conns, tunnelReqs] = process.argv.slice(2).map(Number);
const CLIENT_HELLO = 1;
const CHUNK = Buffer.alloc(16 * 1024, 0x41);
const ONE = Buffer.of(0x41);
const counts = { open: 0, opened: 0, closed: 0, bytes: 0 };

function header(length) {
  const h = Buffer.alloc(5);
  h.writeUInt32LE(length, 0);
  h[4] = CLIENT_HELLO;
  return h;
}

function tcp(big) {
  const s = connect({ host: '127.0.0.1', port });
  let t = null;
  s.on('connect', () => {
    counts.open++;
    counts.opened++;
    s.write(header(big ? 8 << 20 : 4000));
    t = setInterval(() => {
      const c = big ? CHUNK : ONE;
      counts.bytes += c.length;
      s.write(c);
    }, 100);
  });
  s.on('data', () => {});
  s.on('error', () => {});
  s.on('close', () => {
    if (t !== null) {
      clearInterval(t);
      counts.open--;
      counts.closed++;
    }
    setTimeout(() => tcp(big), 100);
  });
}

function tunnel() {
  let t = null;
  let done = false;
  const again = () => {
    if (done) return;
    done = true;
    if (t !== null) clearInterval(t);
    counts.open--;
    counts.closed++;
    setTimeout(tunnel, 100);
  };
  const req = request({ host: '127.0.0.1', port: httpPort, path: '/agent/tunnel', method: 'POST', headers: { 'content-length': String(8 << 20) } }, (res) => {
    res.resume();
    res.on('end', again);
    res.on('error', again);
  });
  req.on('error', again);
  req.on('close', again);
  counts.open++;
  counts.opened++;
  req.write(header(8 << 20));
  t = setInterval(() => {
    counts.bytes += CHUNK.length;
    req.write(CHUNK);
  }, 100);
}

for (let i = 0; i < conns; i++) tcp(i % 2 === 0);
for (let i = 0; i < tunnelReqs; i++) tunnel();
setInterval(() => process.stdout.write(`${JSON.stringify(counts)}\n`), 1000);
