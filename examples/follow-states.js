'use strict';
// Follows the sidecar's log (JSON lines) from a byte offset and prints each state transition as it
// happens, with the time since T0, until the state UNTIL is reached (exit 0) or TIMEOUT_S pass (exit 1).
//
//   node examples/follow-states.js LOG OFFSET T0_MS UNTIL TIMEOUT_S
//
// The sidecar logs every transition as one line { event: 'state', from, to, cause } (DESIGN §8).
const { closeSync, openSync, readSync, statSync } = require('node:fs');

const [log, offsetArg, t0Arg, until, timeoutArg] = process.argv.slice(2);
let offset = Number(offsetArg);
const t0 = Number(t0Arg);
const deadline = Date.now() + Number(timeoutArg) * 1000;
let pending = '';

function poll() {
  const size = statSync(log).size;
  if (size > offset) {
    const buf = Buffer.alloc(size - offset);
    const fd = openSync(log, 'r');
    try {
      readSync(fd, buf, 0, buf.length, offset);
    } finally {
      closeSync(fd);
    }
    offset = size;
    pending += buf.toString('utf8');
    const lines = pending.split('\n');
    pending = lines.pop();
    for (const l of lines) {
      let o;
      try {
        o = JSON.parse(l);
      } catch {
        continue;
      }
      if (o.event !== 'state') continue;
      const at = (((typeof o.time === 'number' ? o.time : Date.parse(o.time)) - t0) / 1000).toFixed(1).padStart(5);
      console.log(`  +${at} s  ${o.from} → ${o.to}  (${o.cause})`);
      if (o.to === until) return true;
    }
  }
  return false;
}

const timer = setInterval(() => {
  if (poll()) {
    clearInterval(timer);
    return;
  }
  if (Date.now() > deadline) {
    clearInterval(timer);
    console.error(`demo: the sidecar did not reach '${until}' within ${timeoutArg} s`);
    process.exitCode = 1;
  }
}, 100);
