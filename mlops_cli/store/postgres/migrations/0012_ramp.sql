-- A test may ramp its treatment share step by step (`ab start --ramp 5,10,25,50`): its ramp
-- (steps, current step, minimums, when each step started) as plain data on the test, and the
-- step each request was served at. NULL: a test without a ramp, a request of such a test.
-- (Numbered after the aliases and webhooks migrations, 0010 and 0011.)
ALTER TABLE ab_tests ADD COLUMN ramp jsonb;
ALTER TABLE requests ADD COLUMN step smallint;
