-- Store schema 4: a batch id keeps the sha256 of the batch's bytes, so the same id sent with
-- other content is refused instead of being taken for "already recorded". NULL: recorded
-- before schema 4 (its content unknown: a retry under that id is taken as the same batch).
ALTER TABLE batches ADD COLUMN sha256 text;
