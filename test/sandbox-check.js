'use strict';
// Tests write only inside their own temporary directories. The system paths a
// sidecar falls back to when no --data-dir or --socket is given must be exactly
// as they were before the run: this takes a fingerprint of each tree (every
// entry's path, type, mode, size and mtime) to compare before and after.
const { lstatSync, readdirSync } = require('node:fs');
const { join } = require('node:path');

const GUARDED = ['/var/lib/apm-sidecar', '/var/run/apm-sidecar'];

function fingerprint(root) {
  const out = new Map();
  (function walk(p) {
    let st;
    try {
      st = lstatSync(p);
    } catch {
      return;
    }
    out.set(p, `${st.mode.toString(8)} ${st.size} ${st.mtimeMs}`);
    if (st.isDirectory()) for (const name of readdirSync(p).sort()) walk(join(p, name));
  })(root);
  return out;
}

function snapshot(roots = GUARDED) {
  const all = new Map();
  for (const r of roots) for (const [k, v] of fingerprint(r)) all.set(k, v);
  return all;
}

/** Lines describing what differs between two snapshots (empty when unchanged). */
function differences(before, after) {
  const lines = [];
  for (const [k, v] of after) {
    if (!before.has(k)) lines.push(`created ${k}`);
    else if (before.get(k) !== v) lines.push(`changed ${k}`);
  }
  for (const k of before.keys()) if (!after.has(k)) lines.push(`removed ${k}`);
  return lines;
}

module.exports = { GUARDED, snapshot, differences };
