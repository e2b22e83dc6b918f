-- Sessions (one per refresh-token family): where each started, for the user's session list.
-- `client_network`: its network only (an IPv4 /24 or an IPv6 /48, e.g. `203.0.113.0/24`),
-- never the address; `user_agent`: its `User-Agent`, at most 256 characters.
-- `started_seq`: the order of the logins, for sessions started in the same second.
ALTER TABLE refresh_families
    ADD COLUMN client_network TEXT,
    ADD COLUMN user_agent TEXT,
    ADD COLUMN started_seq BIGINT GENERATED ALWAYS AS IDENTITY;
