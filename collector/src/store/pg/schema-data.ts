/**
 * The data tables on PostgreSQL: the same tables, identities and indexes as the SQLite schema
 * (schema.ts, version 6), so both stores answer the same queries in the same order.
 *
 *   agent            (agent_id, project_id) in every table, as SQLite keys it
 *   collector times  BIGINT epoch ms (received_at, last_at)
 *   agent times      DOUBLE PRECISION (interval_start, start_time, ts, first_seen): the wire
 *                    carries them as f64 and SQLite keeps whatever number came; a BIGINT column
 *                    would refuse a fractional one and make its batch fail on every resend
 *   blobs            BYTEA (series_key: the series bytes; sketch: Sketch.encodeBuckets bytes)
 *   text keys        COLLATE "C": ordered by their UTF-8 bytes, as SQLite's BINARY orders them,
 *                    whatever the database's locale (the queries' ORDER BY and its indexes agree)
 *
 * Age limits are kept by batched deletes (prune.ts) along an index on each table's time
 * column, not by time partitions: a partition needs every unique key to hold the partition
 * column (traces are keyed by id), a job creating partitions ahead of time on every
 * collector, and a default partition for agent clocks far off; a batched delete costs about
 * what the rows cost to insert, spread over small transactions that ingest never waits on.
 *
 * A minute rollup is rewritten by every frame of its minute (six at 10 s intervals). Its pages are
 * kept 30% free (fillfactor 70) so a rewrite can stay on the row's page as a HOT update, which
 * adds no index entries (measured: 73% of rollup updates HOT, against 3% with full pages).
 *
 * Part of migration 1 of the PostgreSQL schema: once released, a change is a new migration.
 */

/** Columns of metric_points and metric_rollups, in the order of schema.ts's METRIC_COLUMN_NAMES. */
const METRIC_COLUMNS = `
    agent_id TEXT COLLATE "C" NOT NULL,
    project_id TEXT COLLATE "C" NOT NULL,
    series_key BYTEA NOT NULL,
    name TEXT COLLATE "C" NOT NULL,
    tags_json TEXT NOT NULL,
    kind SMALLINT NOT NULL,
    interval_start DOUBLE PRECISION NOT NULL,
    interval_ms BIGINT NOT NULL,
    count BIGINT NOT NULL,
    sum DOUBLE PRECISION NOT NULL,
    min DOUBLE PRECISION,
    max DOUBLE PRECISION,
    last DOUBLE PRECISION,
    last_at BIGINT,
    sketch BYTEA,
    PRIMARY KEY (agent_id, project_id, interval_start, series_key)`;

export const DATA_TABLES_SQL = `
  CREATE TABLE metric_packs (
    agent_id TEXT COLLATE "C" NOT NULL,
    project_id TEXT COLLATE "C" NOT NULL,
    pack_id TEXT COLLATE "C" NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (agent_id, project_id, pack_id)
  );
  CREATE INDEX metric_packs_by_time ON metric_packs (received_at);

  CREATE TABLE metric_points (${METRIC_COLUMNS}
  );
  CREATE INDEX metric_points_by_name ON metric_points (name, interval_start);
  CREATE INDEX metric_points_by_start ON metric_points (interval_start);

  CREATE TABLE metric_rollups (${METRIC_COLUMNS}
  ) WITH (fillfactor = 70);
  CREATE INDEX metric_rollups_by_name ON metric_rollups (name, interval_start);
  CREATE INDEX metric_rollups_by_start ON metric_rollups (interval_start);

  CREATE TABLE traces (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agent_id TEXT COLLATE "C" NOT NULL,
    project_id TEXT COLLATE "C" NOT NULL,
    app TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    txid TEXT NOT NULL,
    trace_id TEXT COLLATE "C" NOT NULL,
    name TEXT COLLATE "C" NOT NULL,
    start_time DOUBLE PRECISION NOT NULL,
    duration_ms DOUBLE PRECISION NOT NULL,
    error TEXT,
    body_json TEXT NOT NULL
  );
  CREATE INDEX traces_by_agent ON traces (agent_id, id);
  CREATE INDEX traces_by_project ON traces (project_id, id);
  CREATE INDEX traces_by_trace ON traces (trace_id);
  CREATE INDEX traces_by_time ON traces (start_time);

  CREATE TABLE active_stacks (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agent_id TEXT COLLATE "C" NOT NULL,
    project_id TEXT COLLATE "C" NOT NULL,
    app TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    txid TEXT NOT NULL,
    name TEXT COLLATE "C" NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    elapsed_ms DOUBLE PRECISION NOT NULL,
    body_json TEXT NOT NULL
  );
  CREATE INDEX active_stacks_by_agent ON active_stacks (agent_id, id);
  CREATE INDEX active_stacks_by_project ON active_stacks (project_id, id);
  CREATE INDEX active_stacks_by_time ON active_stacks (ts);

  CREATE TABLE events (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agent_id TEXT COLLATE "C" NOT NULL,
    project_id TEXT COLLATE "C" NOT NULL,
    app TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    type TEXT NOT NULL,
    message TEXT NOT NULL,
    body_json TEXT NOT NULL
  );
  CREATE INDEX events_by_agent ON events (agent_id, id);
  CREATE INDEX events_by_project ON events (project_id, id);
  CREATE INDEX events_by_time ON events (ts);

  CREATE TABLE snapshots (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agent_id TEXT COLLATE "C" NOT NULL,
    project_id TEXT COLLATE "C" NOT NULL,
    app TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    kind TEXT NOT NULL,
    body_json TEXT NOT NULL
  );
  CREATE INDEX snapshots_by_agent ON snapshots (agent_id, id);
  CREATE INDEX snapshots_by_project ON snapshots (project_id, id);
  CREATE INDEX snapshots_by_time ON snapshots (ts);

  CREATE TABLE bt_registrations (
    project_id TEXT COLLATE "C" NOT NULL,
    agent_id TEXT COLLATE "C" NOT NULL,
    name TEXT COLLATE "C" NOT NULL,
    app TEXT NOT NULL,
    first_seen DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (project_id, agent_id, name)
  );
`;

/** The data tables, for a migration's check that a database is ours and for counts. */
export const DATA_TABLES: readonly string[] = [
  'metric_packs',
  'metric_points',
  'metric_rollups',
  'traces',
  'active_stacks',
  'events',
  'snapshots',
  'bt_registrations',
];
