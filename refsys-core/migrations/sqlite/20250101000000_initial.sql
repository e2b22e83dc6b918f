-- refsys schema, SQLite. Applied by `SqliteUserStore::migrate`.

CREATE TABLE users (
    -- AUTOINCREMENT: ids are never reused, so a token's `sub` cannot come to mean another user.
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    -- E.164, as `Phone` prints it.
    phone          TEXT    NOT NULL,
    -- The user's own code, upper case, as `InviteCode` prints it.
    invite_code    TEXT    NOT NULL,
    -- The owner of the code this user applied.
    invited_by     INTEGER REFERENCES users (id),
    -- 1 + the largest so far, set together with `invited_by` (writers are serialized): orders
    -- each inviter's invitees by when they applied the code (not when they registered).
    activation_seq INTEGER,
    -- Unix seconds by the database's clock; for people reading the table.
    created_at     INTEGER NOT NULL DEFAULT (unixepoch()),
    activated_at   INTEGER,
    CONSTRAINT users_phone_unique UNIQUE (phone),
    CONSTRAINT users_invite_code_unique UNIQUE (invite_code),
    CONSTRAINT users_not_self_invited CHECK (invited_by <> id),
    CONSTRAINT users_activation_complete
        CHECK ((invited_by IS NULL) = (activation_seq IS NULL))
) STRICT;

-- Listing a user's invitees, oldest first, is one index range scan.
CREATE INDEX users_invited_by_idx ON users (invited_by, activation_seq);
-- Finding the next activation number is one index lookup.
CREATE UNIQUE INDEX users_activation_seq_idx ON users (activation_seq);

CREATE TABLE refresh_families (
    family_id  TEXT    PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- The one refresh token of the family that may still be spent.
    live_jti   TEXT    NOT NULL,
    -- Unix seconds (the service's clock, as every time the store sees).
    started_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked    INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1))
) STRICT;

CREATE INDEX refresh_families_user_id_idx ON refresh_families (user_id);
-- For sweeping out expired families.
CREATE INDEX refresh_families_expires_at_idx ON refresh_families (expires_at);
