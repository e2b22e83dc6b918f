-- The event log: every change's event, appended in the change's transaction, and the state
-- of its delivery (see `UserStore::claim_events`). Times are Unix seconds by the service's
-- clock.
CREATE TABLE events (
    -- The order of the changes; one user's events are delivered in this order.
    seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- `evt_` + 32 hex characters: the same on every delivery.
    id              TEXT   NOT NULL,
    type            TEXT   NOT NULL,
    -- The user the event is about (no foreign key: events outlive what they describe).
    user_id         BIGINT,
    occurred_at     BIGINT NOT NULL,
    -- The event's `data` object, JSON.
    data            TEXT   NOT NULL,
    status          TEXT   NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    -- When it was recorded, or queued again by an operator; its maximum age counts from here.
    queued_at       BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    -- The dispatcher that holds the event, and until when.
    lease_token     TEXT,
    lease_until     BIGINT,
    delivered_at    BIGINT,
    last_error      TEXT,
    CONSTRAINT events_id_unique UNIQUE (id)
);

-- Claiming due events walks the pending ones in order...
CREATE INDEX events_pending_idx ON events (seq) WHERE status = 'pending';
-- ...and checks each user's older pending events.
CREATE INDEX events_pending_user_idx ON events (user_id, seq) WHERE status = 'pending';
-- Pruning delivered events, and listing failed ones.
CREATE INDEX events_delivered_idx ON events (delivered_at) WHERE status = 'delivered';
CREATE INDEX events_failed_idx ON events (seq) WHERE status = 'failed';

-- An activation records its `referral.created` in the same call (and so the same
-- transaction). `p_event` is the event's id, or NULL to record none; `p_now` its time.
DROP FUNCTION refsys_activate_invite(BIGINT, TEXT);

CREATE FUNCTION refsys_activate_invite(p_user BIGINT, p_code TEXT, p_event TEXT, p_now BIGINT)
RETURNS TEXT
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_owner BIGINT;
BEGIN
    -- One activation at a time (see the first migration of this function for why).
    PERFORM pg_advisory_xact_lock(x'7265667379730001'::bigint);
    IF NOT EXISTS (SELECT 1 FROM users WHERE id = p_user) THEN
        RETURN 'unknown_user';
    END IF;
    SELECT id INTO v_owner FROM users WHERE invite_code = p_code;
    IF v_owner IS NULL THEN
        RETURN 'not_found';
    END IF;
    IF v_owner = p_user THEN
        RETURN 'own_code';
    END IF;
    IF EXISTS (SELECT 1 FROM users WHERE id = p_user AND invited_by IS NOT NULL) THEN
        RETURN 'already_activated';
    END IF;
    IF EXISTS (
        WITH RECURSIVE chain (id) AS (
            SELECT invited_by FROM users WHERE id = v_owner AND invited_by IS NOT NULL
            UNION
            SELECT u.invited_by FROM users u JOIN chain c ON u.id = c.id
                WHERE u.invited_by IS NOT NULL)
        SELECT 1 FROM chain WHERE id = p_user)
    THEN
        RETURN 'cycle';
    END IF;
    UPDATE users
        SET invited_by = v_owner, activation_seq = nextval('activation_seq'), activated_at = now()
        WHERE id = p_user AND invited_by IS NULL;
    IF p_event IS NOT NULL THEN
        INSERT INTO events (id, type, user_id, occurred_at, data, queued_at, next_attempt_at)
            VALUES (p_event, 'referral.created', p_user, p_now,
                    json_build_object('user_id', p_user, 'referrer_id', v_owner,
                                      'invite_code', p_code)::text,
                    p_now, p_now);
    END IF;
    RETURN 'activated';
END
$$;
