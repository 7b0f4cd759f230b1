-- Counts changes of name, for the name cache (idempotent: see V1).
ALTER TABLE users ADD COLUMN IF NOT EXISTS name_version bigint NOT NULL DEFAULT 0;
