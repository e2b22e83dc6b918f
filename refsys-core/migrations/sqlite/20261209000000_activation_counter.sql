-- Activations are numbered by a counter that never goes back. Before, an activation took
-- 1 + the largest `activation_seq` left in `users`; an account deletion clears its row's
-- number, so once the newest activations were deleted the next one was given a number handed
-- out before, and a client paging `GET /api/invitees/` with a cursor past that number never
-- saw the newcomer.
CREATE TABLE activation_counter (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    last INTEGER NOT NULL
) STRICT;

-- Where to start: past every number given so far, the lost ones too. A number was never
-- larger than the count of activations, and each user activates at most once, so no number
-- given was larger than the largest user id (AUTOINCREMENT: ids are never reused, and a
-- deleted account keeps its row).
INSERT INTO activation_counter (id, last)
SELECT 1, max(COALESCE(MAX(activation_seq), 0), COALESCE(MAX(id), 0)) FROM users;

-- Every number a row takes moves the counter to it (triggers, so that every writer, the admin
-- command's process too, keeps it; their changes are not counted by `changes()`).
CREATE TRIGGER users_activation_counter AFTER UPDATE OF activation_seq ON users
WHEN NEW.activation_seq IS NOT NULL
BEGIN
    UPDATE activation_counter SET last = NEW.activation_seq WHERE last < NEW.activation_seq;
END;

CREATE TRIGGER users_activation_counter_insert AFTER INSERT ON users
WHEN NEW.activation_seq IS NOT NULL
BEGIN
    UPDATE activation_counter SET last = NEW.activation_seq WHERE last < NEW.activation_seq;
END;
