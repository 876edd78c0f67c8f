-- A drift sample may carry the input features the model read (NULL: none), and a sample
-- stream keeps its feature profile (derived from its samples, computed again when stale).
ALTER TABLE drift_samples ADD COLUMN features jsonb;
CREATE TABLE feature_profiles (
    model_type text NOT NULL,
    version text NOT NULL,
    kind text NOT NULL,
    doc jsonb NOT NULL,
    PRIMARY KEY (model_type, version, kind)
);
