-- OtpStore::revoke_session. KEYS[1]: the sorted set of revoked sessions (member: session id,
-- score: when it was revoked, Unix seconds). ARGV: session id, when, forget before (Unix
-- seconds), the key's TTL (seconds). Reply: 0.
-- GT: revoking a session again keeps the later time.
redis.call('ZADD', KEYS[1], 'GT', ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 0
