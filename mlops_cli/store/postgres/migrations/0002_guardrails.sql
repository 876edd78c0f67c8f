-- Registry schema 2: versions may be monitored for drift without serving; A/B tests carry
-- guardrail margins (NULL: off) and the reason an aborted test ended.
ALTER TABLE versions ADD COLUMN monitored boolean NOT NULL DEFAULT false;
ALTER TABLE ab_tests ADD COLUMN max_confidence_drop double precision;
ALTER TABLE ab_tests ADD COLUMN max_latency_increase_ms double precision;
ALTER TABLE ab_tests ADD COLUMN end_reason text;
