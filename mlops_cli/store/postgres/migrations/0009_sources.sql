-- A/B requests and drift samples may live in a source (a lake or warehouse read through
-- DuckDB or Spark, docs/engines.md): its declaration as plain data on the test, and on the
-- version for its drift samples. NULL: the data are in this store.
ALTER TABLE ab_tests ADD COLUMN source jsonb;
ALTER TABLE versions ADD COLUMN drift_source jsonb;
