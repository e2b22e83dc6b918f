-- The event log: every change's event, appended in the change's transaction, and the state
-- of its delivery (see `UserStore::claim_events`). Times are Unix seconds by the service's
-- clock.
CREATE TABLE events (
    -- The order of the changes; one user's events are delivered in this order.
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    -- `evt_` + 32 hex characters: the same on every delivery.
    id              TEXT    NOT NULL,
    type            TEXT    NOT NULL,
    -- The user the event is about (no foreign key: events outlive what they describe).
    user_id         INTEGER,
    occurred_at     INTEGER NOT NULL,
    -- The event's `data` object, JSON.
    data            TEXT    NOT NULL,
    status          TEXT    NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    -- When it was recorded, or queued again by an operator; its maximum age counts from here.
    queued_at       INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    -- The dispatcher that holds the event, and until when.
    lease_token     TEXT,
    lease_until     INTEGER,
    delivered_at    INTEGER,
    last_error      TEXT,
    CONSTRAINT events_id_unique UNIQUE (id)
) STRICT;

-- Claiming due events walks the pending ones in order...
CREATE INDEX events_pending_idx ON events (seq) WHERE status = 'pending';
-- ...and checks each user's older pending events.
CREATE INDEX events_pending_user_idx ON events (user_id, seq) WHERE status = 'pending';
-- Pruning delivered events, and listing failed ones.
CREATE INDEX events_delivered_idx ON events (delivered_at) WHERE status = 'delivered';
CREATE INDEX events_failed_idx ON events (seq) WHERE status = 'failed';
