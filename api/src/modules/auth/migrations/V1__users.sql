-- Sign-in's users. Idempotent, like everything up to V3: databases that
-- init.sql made before migrations existed take this history on their first
-- migrate, each step finding done what was done. init.sql says why each
-- index is there.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE IF NOT EXISTS users (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username      text        NOT NULL
        CONSTRAINT users_username_format CHECK (username ~ '^[A-Za-z0-9_.-]{3,32}$'),
    name          text        NOT NULL
        CONSTRAINT users_name_length CHECK (char_length(name) BETWEEN 1 AND 100),
    password_hash text        NOT NULL,
    role          text        NOT NULL DEFAULT 'user'
        CONSTRAINT users_role_known CHECK (role IN ('user', 'admin')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX IF NOT EXISTS users_username_lower_key ON users (lower(username));

CREATE INDEX IF NOT EXISTS users_search_trgm_idx
    ON users USING gin ((username || ' ' || name) gin_trgm_ops);
