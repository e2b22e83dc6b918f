-- Claiming due events (`UserStore::claim_events`) as a function, for the settings it runs
-- with: the plan walks events_pending_idx in `seq` order and stops after `p_max` claimable
-- events, whatever the statistics say. With statistics taken while few events were pending
-- (a young table, or one that had just drained), the planner otherwise sorts every pending
-- event on each claim, so a backlog (a receiver down for an hour, a burst of sign-ups) drains
-- in time quadratic in its size, just when it should catch up.
--
-- Only each user's oldest pending event is due. SKIP LOCKED: a concurrent claim (another
-- instance) passes over the rows this one is leasing instead of waiting for them, and the
-- NOT EXISTS, which still sees them pending, keeps it off those users' later events.
CREATE FUNCTION refsys_claim_events(p_now BIGINT, p_until BIGINT, p_lease TEXT, p_max BIGINT)
RETURNS TABLE (c_seq BIGINT, c_id TEXT, c_type TEXT, c_occurred_at BIGINT, c_data TEXT,
               c_attempts BIGINT, c_queued_at BIGINT, c_lease TEXT)
LANGUAGE sql VOLATILE
SET enable_sort = off
SET enable_bitmapscan = off
AS $$
    WITH due AS (
        SELECT e.seq FROM events e
        WHERE e.status = 'pending' AND e.next_attempt_at <= p_now
          AND (e.lease_until IS NULL OR e.lease_until <= p_now)
          AND NOT EXISTS (SELECT 1 FROM events p WHERE p.status = 'pending'
                          AND p.user_id = e.user_id AND p.seq < e.seq)
        ORDER BY e.seq LIMIT p_max
        FOR UPDATE SKIP LOCKED)
    UPDATE events SET lease_token = p_lease, lease_until = p_until, attempts = events.attempts + 1
    FROM due WHERE events.seq = due.seq
    RETURNING events.seq, events.id, events.type, events.occurred_at, events.data,
              events.attempts, events.queued_at, events.lease_token
$$;
