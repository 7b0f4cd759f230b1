-- Counts changes of a user's credentials (password, role, sessions ended):
-- each session carries the count from its login, and one from before the
-- latest change is refused, so a login in flight during a change cannot
-- outlive it (api/src/modules/auth/sessions.rs).
ALTER TABLE users ADD COLUMN credential_epoch bigint NOT NULL DEFAULT 0;
