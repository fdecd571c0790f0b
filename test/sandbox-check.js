'use strict';
// Tests write only inside their own temporary directories. The system paths a
// sidecar falls back to when no --data-dir or --socket is given must be exactly
// as they were before the run: this takes a fingerprint of each tree (every
// entry's path, type, mode, size and mtime) to compare before and after.
const { lstatSync, readdirSync } = require('node:fs');
const { join } = require('node:path');
const { spawnSync } = require('node:child_process');

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

// The checkout too: a test that leaves a file in the source tree (a screenshot, a database)
// shows up as a new or changed path in `git status` (dist/ and node_modules/ are ignored).
function checkout() {
  const r = spawnSync('git', ['status', '--porcelain', '--untracked-files=all'], { cwd: join(__dirname, '..'), encoding: 'utf8' });
  const out = new Map();
  if (r.status !== 0) return out;
  for (const line of r.stdout.split('\n')) {
    if (line.trim() === '') continue;
    const path = join(__dirname, '..', line.slice(3));
    let st = null;
    try {
      st = lstatSync(path);
    } catch {}
    out.set(path, st === null ? `${line.slice(0, 2)} gone` : `${line.slice(0, 2)} ${st.size} ${st.mtimeMs}`);
  }
  return out;
}

function snapshot(roots = GUARDED) {
  const all = new Map();
  for (const r of roots) for (const [k, v] of fingerprint(r)) all.set(k, v);
  for (const [k, v] of checkout()) all.set(k, v);
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
