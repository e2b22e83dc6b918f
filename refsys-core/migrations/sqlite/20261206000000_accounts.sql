-- Account deletion: a deleted account keeps its row as a tombstone, so that its id and invite
-- code stay taken and its invitees keep the code they applied. Its phone becomes
-- `deleted:<id>` (never an E.164 number, so no login finds it), its inviter, activation and
-- sessions are erased, and `deleted_at` (Unix seconds) says when.
ALTER TABLE users ADD COLUMN deleted_at INTEGER;
