-- How many live accounts applied each user's code, kept with the rows it counts, so a
-- profile or a page of invitees answers it without counting them (a user may have 100,000).
-- The trigger follows every change of `invited_by`: an activation sets it (+1 for the
-- inviter), an invitee's account deletion clears it (-1); nothing else writes the column.
-- Both run under the activation advisory lock, so one inviter's count is never updated by
-- two of them at once; the row lock the update takes is a no-key one, which a new
-- session's `FOR KEY SHARE` of the same user does not wait for.
ALTER TABLE users ADD COLUMN invited_count BIGINT NOT NULL DEFAULT 0;

UPDATE users u SET invited_count = c.n
FROM (SELECT invited_by, count(*) AS n FROM users
      WHERE invited_by IS NOT NULL GROUP BY invited_by) c
WHERE u.id = c.invited_by;

CREATE FUNCTION refsys_invited_count() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.invited_by IS NOT NULL THEN
        UPDATE users SET invited_count = invited_count - 1 WHERE id = OLD.invited_by;
    END IF;
    IF NEW.invited_by IS NOT NULL THEN
        UPDATE users SET invited_count = invited_count + 1 WHERE id = NEW.invited_by;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER users_invited_count AFTER UPDATE OF invited_by ON users
FOR EACH ROW WHEN (OLD.invited_by IS DISTINCT FROM NEW.invited_by)
EXECUTE FUNCTION refsys_invited_count();
