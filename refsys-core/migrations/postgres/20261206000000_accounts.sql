-- Account deletion: a deleted account keeps its row as a tombstone, so that its id and invite
-- code stay taken and its invitees keep the code they applied. Its phone becomes
-- `deleted:<id>` (never an E.164 number, so no login finds it), its inviter, activation and
-- sessions are erased, and `deleted_at` (Unix seconds) says when.
ALTER TABLE users ADD COLUMN deleted_at BIGINT;

-- Activation as before, except that a deleted account can neither apply a code nor have its
-- code applied (a code nobody owns), and the activation time is the service's clock, as every
-- other time the store keeps. Account deletion takes the same advisory lock, so an
-- activation runs wholly before a deletion or sees the account gone.
CREATE OR REPLACE FUNCTION refsys_activate_invite(p_user BIGINT, p_code TEXT, p_event TEXT,
                                                  p_now BIGINT)
RETURNS TEXT
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_owner BIGINT;
BEGIN
    PERFORM pg_advisory_xact_lock(x'7265667379730001'::bigint);
    IF NOT EXISTS (SELECT 1 FROM users WHERE id = p_user AND deleted_at IS NULL) THEN
        RETURN 'unknown_user';
    END IF;
    SELECT id INTO v_owner FROM users WHERE invite_code = p_code AND deleted_at IS NULL;
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
        SET invited_by = v_owner, activation_seq = nextval('activation_seq'),
            activated_at = to_timestamp(p_now)
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
