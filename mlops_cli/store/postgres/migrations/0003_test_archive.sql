-- Store schema 3: finalized A/B tests are archived in place. Their rows stay in ab_tests (so a
-- name stays unique forever and `ab status` still finds them) but the registry reads only the
-- running ones, through this partial index: its cost does not grow with the tests that ended.
CREATE INDEX ab_tests_running ON ab_tests (ord) WHERE status = 'running';
