-- Activations are numbered by a counter that never goes back. Before, an activation took
-- 1 + the largest `activation_seq` left in `users`; an account deletion clears its row's
-- number, so once the newest activations were deleted the next one was given a number handed
-- out before, and a client paging `GET /api/invitees/` with a cursor past that number never
-- saw the newcomer. The counter starts where the numbers given so far end (a number lost
-- before this migration cannot be found again; the ones it gives from now on are new).
CREATE TABLE activation_counter (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    last INTEGER NOT NULL
) STRICT;

INSERT INTO activation_counter (id, last)
SELECT 1, COALESCE(MAX(activation_seq), 0) FROM users;

-- Every number an activation takes moves the counter to it (a trigger, so that every writer,
-- the admin command's process too, keeps it; its change is not counted by `changes()`).
CREATE TRIGGER users_activation_counter AFTER UPDATE OF activation_seq ON users
WHEN NEW.activation_seq IS NOT NULL
BEGIN
    UPDATE activation_counter SET last = NEW.activation_seq WHERE last < NEW.activation_seq;
END;
