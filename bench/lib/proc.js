'use strict';
/** Cross-process CPU accounting from /proc (Linux): process.cpuUsage() only sees the caller. */
const { readFileSync } = require('node:fs');
const { execFileSync } = require('node:child_process');

let tick = 100;
try {
  tick = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
} catch {
  // 100 is the Linux default
}

/** utime + stime of `pid` in seconds (resolution 1 / CLK_TCK). */
function cpuSeconds(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Field 2 (comm) may contain spaces: split after the closing paren.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state); utime is field 14, stime field 15.
  return (Number(rest[11]) + Number(rest[12])) / tick;
}

module.exports = { cpuSeconds, CLK_TCK: tick };
