-- OtpStore::check. ARGV: now, code hash hex, cooldown, max_sends, window, key ttl,
-- max_failures, lockout. Reply: {0, 0} valid, {1, attempts left} invalid, {2, secs} burned,
-- {3, 0} missing, {4, secs} locked, {5, secs} locked by this miss. A valid code is kept, marked used (u = 1), until it expires,
-- so that OtpStore::restore can give it back.
local now = tonumber(ARGV[1])
local cooldown, max_sends, window = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local max_failures, lockout = tonumber(ARGV[7]), tonumber(ARGV[8])

local failed = forget_old(now, window)
if failed then return failed end
local locked = lock_left(now)
if locked then return {4, locked} end
local pending = redis.call('HMGET', code_key, 'h', 'left', 'u')
local hash, left = pending[1], tonumber(pending[2])
if not hash or pending[3] then return {3, 0} end
if not left then return corrupt('attempts left') end

-- A burned code (left = 0) answers every code alike; such checks are not misses.
if left > 0 then
  if hash == ARGV[2] then
    redis.call('HSET', code_key, 'u', '1')
    redis.call('DEL', guard_key)
    return {0, 0}
  end
  left = left - 1
  local budget = count_failure(now, max_failures, lockout)
  if not budget then return {5, math.max(lockout, 1)} end
  redis.call('HSET', code_key, 'left', left)
  redis.call('EXPIRE', code_key, ARGV[6])
  if left > 0 then return {1, math.min(left, budget)} end
end
local refused = blocked(now, cooldown, max_sends, window)
if refused then return {2, refused[2]} end
return {2, 1}
