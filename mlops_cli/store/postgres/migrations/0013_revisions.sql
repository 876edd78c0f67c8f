-- Registry revisions: a change of model types takes the next number of `settings.rev` (the one
-- row every change locks, so numbers follow commit order and are never reused) and stamps it on
-- each type and version row it writes. A reader holding a type at revision R reads back only the
-- version rows stamped after R (registry.DELTA_SQL), not every version of the type.
ALTER TABLE settings ADD COLUMN rev bigint NOT NULL DEFAULT 0;
ALTER TABLE model_types ADD COLUMN rev bigint NOT NULL DEFAULT 0;
ALTER TABLE versions ADD COLUMN rev bigint NOT NULL DEFAULT 0;
