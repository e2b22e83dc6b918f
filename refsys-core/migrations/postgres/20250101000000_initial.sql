-- refsys schema, PostgreSQL. Applied by `PgUserStore::migrate`.

-- Orders each inviter's invitees by when they applied the code (not when they registered).
CREATE SEQUENCE activation_seq;

CREATE TABLE users (
    -- Identity values are never reused, so a token's `sub` cannot come to mean another user.
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- E.164, as `Phone` prints it.
    phone          TEXT   NOT NULL,
    -- The user's own code, upper case, as `InviteCode` prints it.
    invite_code    TEXT   NOT NULL,
    -- The owner of the code this user applied.
    invited_by     BIGINT REFERENCES users (id),
    -- From `activation_seq`, set together with `invited_by`.
    activation_seq BIGINT,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    activated_at   TIMESTAMPTZ,
    CONSTRAINT users_phone_unique UNIQUE (phone),
    CONSTRAINT users_invite_code_unique UNIQUE (invite_code),
    CONSTRAINT users_not_self_invited CHECK (invited_by <> id),
    CONSTRAINT users_activation_complete
        CHECK ((invited_by IS NULL) = (activation_seq IS NULL))
);

-- Listing a user's invitees, oldest first, is one index range scan.
CREATE INDEX users_invited_by_idx ON users (invited_by, activation_seq);

CREATE TABLE refresh_families (
    family_id  TEXT    PRIMARY KEY,
    user_id    BIGINT  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- The one refresh token of the family that may still be spent.
    live_jti   TEXT    NOT NULL,
    -- Unix seconds (the service's clock, as every time the store sees).
    started_at BIGINT  NOT NULL,
    expires_at BIGINT  NOT NULL,
    revoked    BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE INDEX refresh_families_user_id_idx ON refresh_families (user_id);
-- For sweeping out expired families.
CREATE INDEX refresh_families_expires_at_idx ON refresh_families (expires_at);
