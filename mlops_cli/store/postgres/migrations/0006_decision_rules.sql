-- An A/B test records the rules it is judged by: a relative latency margin
-- (NULL: none), its harm tolerances and the rules' version. Tests already stored keep the
-- rules they started with (version 1, no tolerance, the latency guardrail as it was).
ALTER TABLE ab_tests ADD COLUMN max_latency_increase double precision;
ALTER TABLE ab_tests ADD COLUMN harm_tolerance jsonb NOT NULL
    DEFAULT '{"error_rate": 0.0, "confidence": 0.0, "inference_time_ms": 0.0, "tail_latency": 0.0}';
ALTER TABLE ab_tests ADD COLUMN decision_rules integer NOT NULL DEFAULT 1;
