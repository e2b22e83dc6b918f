-- How many live accounts applied each user's code, kept with the rows it counts, so a
-- profile or a page of invitees answers it without counting them (a user may have 100,000).
-- The trigger follows every change of `invited_by`: an activation sets it (+1 for the
-- inviter), an invitee's account deletion clears it (-1); nothing else writes the column.
ALTER TABLE users ADD COLUMN invited_count INTEGER NOT NULL DEFAULT 0;

UPDATE users SET invited_count =
    (SELECT count(*) FROM users g WHERE g.invited_by = users.id);

CREATE TRIGGER users_invited_count AFTER UPDATE OF invited_by ON users
WHEN OLD.invited_by IS NOT NEW.invited_by
BEGIN
    UPDATE users SET invited_count = invited_count - 1 WHERE id = OLD.invited_by;
    UPDATE users SET invited_count = invited_count + 1 WHERE id = NEW.invited_by;
END;
