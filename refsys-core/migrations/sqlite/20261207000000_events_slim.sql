-- Fewer pages written per recorded change: the event log without AUTOINCREMENT (which
-- updates sqlite_sequence on every insert) and without the unique index on `id` (a page
-- per insert). Each page a transaction changes is written to the WAL at its commit, and
-- checkpointed later.
--
-- `seq` is still the order of the changes: a rowid is one more than the largest in the
-- table, so it only grows while events are kept, and is reused only after the newest event
-- was pruned, which orders nothing. Ids stay unique without the index: they are UUID
-- version 7 (a millisecond time and 74 random bits), made by the service. Settling finds an
-- event by `seq` (and checks its id and lease); only `admin events redeliver <id>` looks
-- one up by id, and scans.
CREATE TABLE events_slim (
    seq             INTEGER PRIMARY KEY,
    id              TEXT    NOT NULL,
    type            TEXT    NOT NULL,
    user_id         INTEGER,
    occurred_at     INTEGER NOT NULL,
    data            TEXT    NOT NULL,
    status          TEXT    NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    queued_at       INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    lease_token     TEXT,
    lease_until     INTEGER,
    delivered_at    INTEGER,
    last_error      TEXT
) STRICT;

INSERT INTO events_slim
    (seq, id, type, user_id, occurred_at, data, status, attempts, queued_at, next_attempt_at,
     lease_token, lease_until, delivered_at, last_error)
SELECT seq, id, type, user_id, occurred_at, data, status, attempts, queued_at, next_attempt_at,
       lease_token, lease_until, delivered_at, last_error
FROM events;

DROP TABLE events;
ALTER TABLE events_slim RENAME TO events;
-- (AUTOINCREMENT's counter for the old table.)
DELETE FROM sqlite_sequence WHERE name = 'events';

-- The same indexes as before (`20261203000000_events.sql` says what each is for).
CREATE INDEX events_pending_idx ON events (seq) WHERE status = 'pending';
CREATE INDEX events_pending_user_idx ON events (user_id, seq) WHERE status = 'pending';
CREATE INDEX events_delivered_idx ON events (delivered_at) WHERE status = 'delivered';
CREATE INDEX events_failed_idx ON events (seq) WHERE status = 'failed';
