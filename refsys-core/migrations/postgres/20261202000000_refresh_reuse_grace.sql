-- Refresh reuse grace: the token spent last, and when, so that presenting it again within the
-- grace period (a retry after a lost response, two tabs at once) gets the live token instead
-- of revoking the family.
ALTER TABLE refresh_families
    ADD COLUMN previous_jti TEXT,
    ADD COLUMN rotated_at   BIGINT;
