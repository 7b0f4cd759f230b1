-- Schema of the api service as it stands, hand-written for reading: what
-- each table is for, and why each index is there. It is not what reaches a
-- database. The migrations do that (api/migrations, then each module's
-- migrations/, applied in order by `api db migrate` and before serving),
-- and a test applies every migration to an empty database and checks that
-- pg_dump sees exactly this schema. A schema change is a new migration and
-- the same change here, in one commit.
-- Every index says which query it serves; an index nobody queries is a cost.

-- Trigram matching for the user search (GET /v2/users?q=...).
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE IF NOT EXISTS users (
    -- The primary key's index serves GET /getName and POST /setName (by id).
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Kept as typed; uniqueness and lookups are case-insensitive (see below).
    username      text        NOT NULL
        CONSTRAINT users_username_format CHECK (username ~ '^[A-Za-z0-9_.-]{3,32}$'),
    name          text        NOT NULL
        CONSTRAINT users_name_length CHECK (char_length(name) BETWEEN 1 AND 100),
    -- argon2id in PHC string format ($argon2id$v=19$m=...,t=...,p=...$salt$hash).
    password_hash text        NOT NULL,
    role          text        NOT NULL DEFAULT 'user'
        CONSTRAINT users_role_known CHECK (role IN ('user', 'admin')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Counts changes of name: the name cache in Redis keeps only the newest
-- (api/src/modules/auth/names.rs). Added this way so older databases get
-- it too.
ALTER TABLE users ADD COLUMN IF NOT EXISTS name_version bigint NOT NULL DEFAULT 0;

-- Counts changes of the user's credentials: a password or role change, or
-- their sessions ended. Each session carries the count it logged in under,
-- and one from before the latest change is refused, so that a login in
-- flight during the change cannot outlive it (api/src/modules/auth/sessions.rs).
ALTER TABLE users ADD COLUMN credential_epoch bigint NOT NULL DEFAULT 0;

-- Serves POST /login (WHERE lower(username) = lower($1)) and makes usernames
-- unique regardless of case; its name is mapped to "username taken".
CREATE UNIQUE INDEX IF NOT EXISTS users_username_lower_key ON users (lower(username));

-- Serves GET /v2/users?q=...: (username || ' ' || name) ILIKE '%q%'.
-- The expression must match the query's exactly for the planner to use it.
CREATE INDEX IF NOT EXISTS users_search_trgm_idx
    ON users USING gin ((username || ' ' || name) gin_trgm_ops);

-- The transactional outbox (api/src/modules/auth/events/): each change's
-- event, written in the change's own transaction. The relay moves rows to
-- the Redis stream in id order and deletes them, so the table is empty but
-- while Redis is away. No foreign key: an event outlives what it describes.
CREATE TABLE IF NOT EXISTS outbox (
    -- The primary key's index serves the relay (ORDER BY id LIMIT n, and
    -- DELETE ... WHERE id = ANY($1)).
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- For consumers to drop the copies that at-least-once delivery may bring.
    event_id    uuid        NOT NULL,
    type        text        NOT NULL,
    user_id     bigint      NOT NULL,
    data        jsonb       NOT NULL,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    -- The causing request's W3C traceparent, for the stream entry; NULL
    -- when traces are off.
    traceparent text
);
