-- Sessions (one per refresh-token family): where each started, for the user's session list.
-- Its network only (an IPv4 /24 or an IPv6 /48, e.g. `203.0.113.0/24`), never the address.
ALTER TABLE refresh_families ADD COLUMN client_network TEXT;
-- Its `User-Agent`, at most 256 characters.
ALTER TABLE refresh_families ADD COLUMN user_agent TEXT;
