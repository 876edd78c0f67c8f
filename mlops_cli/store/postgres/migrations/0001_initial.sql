-- mlops PostgreSQL store, schema version 1.
-- Applied by `mlops -C URL init` / `mlops -C URL db upgrade` in one transaction under an advisory lock.
-- Documents kept as `json` (not jsonb) keep their key order, so every record reads back exactly
-- as the directory store writes it; query them with ->, ->> as jsonb.

CREATE TABLE schema_version (
    version integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- The registry: one settings row (also the lock every registry change takes FOR UPDATE),
-- model types, versions, champion histories and A/B tests as rows.
CREATE TABLE settings (
    id integer PRIMARY KEY CHECK (id = 1),
    doc json NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE model_types (
    ord bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    name text PRIMARY KEY,
    champion text
);

CREATE TABLE versions (
    ord bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    model_type text NOT NULL REFERENCES model_types (name) ON DELETE CASCADE,
    version text NOT NULL,
    model_path text NOT NULL,
    config json NOT NULL,
    traffic_percentage double precision NOT NULL,
    registered_at text NOT NULL,
    description text NOT NULL,
    tags json NOT NULL,
    sha256 text,
    size_bytes bigint,
    deprecated boolean NOT NULL,
    PRIMARY KEY (model_type, version)
);

CREATE TABLE champion_history (
    model_type text NOT NULL REFERENCES model_types (name) ON DELETE CASCADE,
    position integer NOT NULL,
    version text NOT NULL,
    PRIMARY KEY (model_type, position)
);

CREATE TABLE ab_tests (
    ord bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    name text PRIMARY KEY,
    model_type text NOT NULL,
    control_version text NOT NULL,
    treatment_version text NOT NULL,
    treatment_traffic_pct double precision NOT NULL,
    duration_days double precision NOT NULL,
    min_requests bigint NOT NULL,
    max_error_rate_increase double precision NOT NULL,
    min_confidence_improvement double precision NOT NULL,
    alpha double precision NOT NULL,
    method text NOT NULL,
    sequential_tuning bigint NOT NULL,
    status text NOT NULL,
    started_at text NOT NULL,
    finalized_at text
);

-- Streams. Each table is append-only. The primary key of a stream table is (stream key, id):
-- the one index serves "the last N" read backwards, and with no index on id alone the planner
-- cannot choose to scan every stream's newer rows instead.
CREATE TABLE requests (
    id bigint GENERATED ALWAYS AS IDENTITY,
    test text NOT NULL,
    variant text NOT NULL CHECK (variant IN ('control', 'treatment')),
    user_id text,
    user_id_is_int boolean NOT NULL DEFAULT false,
    inference_time_ms double precision NOT NULL,
    confidence double precision NOT NULL,
    error boolean NOT NULL,
    ts timestamptz NOT NULL,
    PRIMARY KEY (test, id)
);

CREATE TABLE metrics (
    id bigint GENERATED ALWAYS AS IDENTITY,
    model_type text NOT NULL,
    version text NOT NULL,
    inference_time_ms double precision NOT NULL,
    confidence double precision NOT NULL,
    error boolean NOT NULL,
    ts timestamptz NOT NULL,
    PRIMARY KEY (model_type, version, id)
);

CREATE TABLE drift_samples (
    id bigint GENERATED ALWAYS AS IDENTITY,
    model_type text NOT NULL,
    version text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('reference', 'production')),
    prediction double precision NOT NULL,
    confidence double precision NOT NULL,
    ts timestamptz NOT NULL,
    PRIMARY KEY (model_type, version, kind, id)
);

CREATE TABLE checks (
    id bigint GENERATED ALWAYS AS IDENTITY,
    model_type text NOT NULL,
    version text NOT NULL,
    doc json NOT NULL,
    score double precision,
    level text,
    ts timestamptz NOT NULL,
    PRIMARY KEY (model_type, version, id)
);
CREATE INDEX checks_stream_ts ON checks (model_type, version, ts);

CREATE TABLE events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    doc json NOT NULL,
    kind text NOT NULL,
    model_type text,
    ts timestamptz NOT NULL
);
CREATE INDEX events_ts ON events (ts);

-- Per stream: records held and records ever appended (the position), updated in the same
-- transaction as every append, so both are O(1) and change exactly when records commit.
CREATE TABLE stream_counts (
    stream text PRIMARY KEY,
    records bigint NOT NULL,
    appended bigint NOT NULL
);

-- A batch id commits with its rows: a retried batch finds it and appends nothing.
CREATE TABLE batches (
    stream text NOT NULL,
    batch_id text NOT NULL,
    records bigint NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, batch_id)
);

-- claim(key, ttl): one winner per ttl across hosts.
CREATE TABLE claims (
    key text PRIMARY KEY,
    claimed_at timestamptz NOT NULL
);
