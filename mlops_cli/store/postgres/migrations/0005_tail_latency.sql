-- A/B tests carry the tail-latency guardrail (on or off, its promotion
-- margin) and the threshold they froze (tau in ms, its source, the requests it came from).
-- Tests started before it keep the rules they started with: the guardrail off.
ALTER TABLE ab_tests ADD COLUMN tail_latency boolean NOT NULL DEFAULT false;
ALTER TABLE ab_tests ADD COLUMN max_tail_latency_increase double precision;
ALTER TABLE ab_tests ADD COLUMN tail_latency_ms double precision;
ALTER TABLE ab_tests ADD COLUMN tail_latency_source text;
ALTER TABLE ab_tests ADD COLUMN tail_latency_requests bigint;
