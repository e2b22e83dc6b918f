-- OtpStore::issue. ARGV: now, code hash hex, expires_at, cooldown, max_attempts,
-- max_sends, window, key ttl (all seconds). Reply: {0, 0} stored, {1, secs} cooldown,
-- {2, secs} window full, {3, secs} locked.
local now = tonumber(ARGV[1])
local cooldown, max_attempts = tonumber(ARGV[4]), ARGV[5]
local max_sends, window, ttl = tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8]

local failed = forget_old(now, window)
if failed then return failed end
local locked = lock_left(now)
if locked then return {3, locked} end
local refused = blocked(now, cooldown, max_sends, window)
if refused then return refused end

redis.call('DEL', code_key)
redis.call('HSET', code_key, 'h', ARGV[2], 'exp', ARGV[3], 'left', max_attempts)
redis.call('RPUSH', sends_key, ARGV[1])
redis.call('EXPIRE', code_key, ttl)
redis.call('EXPIRE', sends_key, ttl)
return {0, 0}
