-- An invite activation as one statement: `SELECT refsys_activate_invite(user, code)`.
--
-- `PgUserStore` pipelines its statements on shared connections, so an activation cannot be a
-- transaction of several statements; a function call runs in a transaction of its own.
--
-- Why this cannot close a cycle: every activation first takes one transaction-scoped advisory
-- lock, so activations run one at a time across all connections and server instances. In a
-- VOLATILE function under READ COMMITTED every statement takes a new snapshot, so the checks
-- after the lock see every earlier activation, including the one that just released it. Two
-- users applying each other's codes therefore run in some order, and the second one's walk up
-- its inviter chain finds the first. The lock is released when the call's transaction ends.
--
-- The answer is one of: unknown_user, not_found, own_code, already_activated, cycle,
-- activated (checked in that order, as `UserStore::activate_invite` documents).
CREATE FUNCTION refsys_activate_invite(p_user BIGINT, p_code TEXT) RETURNS TEXT
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_owner BIGINT;
BEGIN
    -- "refsys" and 1 in ASCII hex, to keep clear of other applications' keys.
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
    -- The walk goes up from the code's owner (UNION, not UNION ALL, so it ends even on a
    -- corrupt cycle).
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
    RETURN 'activated';
END
$$;
