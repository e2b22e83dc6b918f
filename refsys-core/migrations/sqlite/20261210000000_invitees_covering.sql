-- A profile lists its oldest invitees' phones (up to 100 by default): with the phone in the
-- index the list is read from the index alone, not from one table row per invitee. The order
-- (invited_by, activation_seq) is unchanged, so every statement that used the index still can.
DROP INDEX users_invited_by_idx;
CREATE INDEX users_invited_by_idx ON users (invited_by, activation_seq, phone);
