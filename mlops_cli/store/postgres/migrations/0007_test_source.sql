-- An A/B test may read its requests from a source (a lake or warehouse, docs/engines.md):
-- its declaration, as plain data; NULL for a test whose requests are in the project's store.
ALTER TABLE ab_tests ADD COLUMN source jsonb;
