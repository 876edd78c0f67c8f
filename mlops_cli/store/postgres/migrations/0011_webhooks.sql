-- Events out (docs/events.md). Endpoints; the outbox, written in the transaction of the change
-- whose audit events it holds, numbered (n) and sequenced per model type under the registry
-- lock; where delivery stands (one row, locked while a deliverer claims or settles) and the log
-- of attempts. Signing secrets live in a schema of their own, so that a grant on every table of
-- `public` (the service role's read access) does not reach them: grant them to the pipeline
-- role alone.
CREATE TABLE webhooks (
    id text PRIMARY KEY,
    url text NOT NULL,
    events jsonb NOT NULL,
    model_type text,
    created_at text NOT NULL,
    after bigint NOT NULL
);
CREATE TABLE outbox (
    n bigint PRIMARY KEY,
    id text NOT NULL UNIQUE,
    model_type text,
    seq bigint NOT NULL,
    event text,
    ts text,
    data json NOT NULL
);
CREATE UNIQUE INDEX outbox_type_seq ON outbox ((coalesce(model_type, '')), seq);
CREATE TABLE webhook_delivery (
    id integer PRIMARY KEY CHECK (id = 1),
    doc jsonb NOT NULL
);
INSERT INTO webhook_delivery (id, doc) VALUES (1, '{}');
CREATE TABLE webhook_deliveries (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    doc jsonb NOT NULL
);
CREATE SCHEMA IF NOT EXISTS mlops_private;
CREATE TABLE mlops_private.webhook_secrets (
    webhook text PRIMARY KEY,
    secret text NOT NULL
);
