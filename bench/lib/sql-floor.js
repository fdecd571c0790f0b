'use strict';
/**
 * Floors for bench/collector-store.js: what plain better-sqlite3 code spends per point
 * writing the same points, with nothing of the collector around it (no decode, no pack
 * ids, no merging in JavaScript), WAL and synchronous=FULL as the collector runs, one
 * transaction per frame. CPU µs per point (process.cpuUsage), in this process.
 *
 *   schema    the collector's own tables (its migrations, from the build under test):
 *             a plain INSERT of every point into metric_points and an upsert of it into
 *             metric_rollups (six frames share each minute's row; count and sum added, the
 *             sketch replaced, not merged): the floor of a row per point and per minute in
 *             this schema
 *   slim row  one INSERT per point into a table holding only a series number, the
 *             interval start, the statistics and the sketch (no indexes besides its
 *             key): the floor of any design that keeps one SQLite row per point
 *   pack row  one INSERT per pack of ~100 points, the pack's encoded points as a blob
 *             (as the sidecar's retention keeps frames): a row per pack, not per point
 */
const { mkdtempSync, rmSync } = require('node:fs');
const { join } = require('node:path');
const Database = require('better-sqlite3');

const cpuSeconds = () => {
  const c = process.cpuUsage();
  return (c.user + c.system) / 1e6;
};

/** `rows`: [{ key: Buffer, name, tagsJson, kind, sketch: Buffer | null }] of one frame; `frames` transactions. */
function sqlFloors({ tmp, migrate, rows, packBytes, frames }) {
  const out = {};
  const run = (label, setup, perFrame) => {
    const dir = mkdtempSync(join(tmp, 'floor-'));
    const db = new Database(join(dir, 'floor.db'));
    try {
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = FULL');
      const write = db.transaction(perFrame(setup(db))).immediate;
      for (let f = 0; f < 20; f++) write(1e6 + f); // warm-up
      const t0 = cpuSeconds();
      for (let f = 0; f < frames; f++) write(f);
      out[label] = ((cpuSeconds() - t0) * 1e6) / (frames * rows.length);
    } finally {
      db.close();
      rmSync(dir, { recursive: true, force: true });
    }
  };
  const base = 1_700_000_040_000;
  run(
    'schema',
    (db) => {
      migrate(db, 'floor.db');
      const cols = 'agent_id, project_id, series_key, name, tags_json, kind, interval_start, interval_ms, count, sum, min, max, last, last_at, sketch';
      const values = `VALUES (${cols
        .split(', ')
        .map(() => '?')
        .join(', ')})`;
      return {
        insert: db.prepare(`INSERT INTO metric_points (${cols}) ${values}`),
        upsert: db.prepare(`INSERT INTO metric_rollups (${cols}) ${values}
          ON CONFLICT (agent_id, project_id, interval_start, series_key) DO UPDATE SET
            count = count + excluded.count, sum = sum + excluded.sum, sketch = excluded.sketch`),
      };
    },
    ({ insert, upsert }) =>
      (f) => {
        const start = base + f * 10_000;
        const minute = base + Math.floor(f / 6) * 60_000;
        for (const r of rows) {
          insert.run('agent', 'bench', r.key, r.name, r.tagsJson, r.kind, start, 10_000, 100, 2000, 1, 90, null, null, r.sketch);
          upsert.run('agent', 'bench', r.key, r.name, r.tagsJson, r.kind, minute, 60_000, 100, 2000, 1, 90, null, null, r.sketch);
        }
      },
  );
  run(
    'slimRow',
    (db) => {
      db.exec(`CREATE TABLE p (series INTEGER NOT NULL, interval_start INTEGER NOT NULL, count INTEGER NOT NULL, sum REAL NOT NULL,
        min REAL, max REAL, last REAL, sketch BLOB, PRIMARY KEY (interval_start, series)) WITHOUT ROWID`);
      return db.prepare('INSERT INTO p VALUES (?, ?, ?, ?, ?, ?, ?, ?)');
    },
    (insert) => (f) => {
      const start = base + f * 10_000;
      for (let i = 0; i < rows.length; i++) insert.run(i, start, 100, 2000, 1, 90, null, rows[i].sketch);
    },
  );
  run(
    'packRow',
    (db) => {
      db.exec(
        'CREATE TABLE k (agent_id TEXT NOT NULL, pack_id TEXT NOT NULL, interval_start INTEGER NOT NULL, body BLOB NOT NULL, PRIMARY KEY (agent_id, pack_id)) WITHOUT ROWID',
      );
      return db.prepare('INSERT INTO k VALUES (?, ?, ?, ?)');
    },
    (insert) => (f) => {
      for (let p = 0; p < packBytes.length; p++) insert.run('agent', `f${f}-${p}`, base + f * 10_000, packBytes[p]);
    },
  );
  return out;
}

module.exports = { sqlFloors };
