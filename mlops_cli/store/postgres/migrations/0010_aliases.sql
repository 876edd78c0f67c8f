-- Aliases: named pointers to versions besides the champion (`mlops alias set`). An alias names
-- a registered version of its type; removing the type removes its aliases.
CREATE TABLE aliases (
    model_type text NOT NULL REFERENCES model_types (name) ON DELETE CASCADE,
    alias text NOT NULL,
    version text NOT NULL,
    PRIMARY KEY (model_type, alias),
    FOREIGN KEY (model_type, version) REFERENCES versions (model_type, version) ON DELETE CASCADE
);
