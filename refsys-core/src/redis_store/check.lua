-- OtpStore::check. ARGV: now, code hash hex, cooldown, max_sends, window, key ttl.
-- Reply: {0, 0} valid, {1, attempts left} invalid, {2, secs} burned, {3, 0} missing.
local now = tonumber(ARGV[1])
local cooldown, max_sends, window = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])

local failed = forget_old(now, window)
if failed then return failed end
local pending = redis.call('HMGET', code_key, 'h', 'left')
local hash, left = pending[1], tonumber(pending[2])
if not hash then return {3, 0} end
if not left then return corrupt('attempts left') end

if left > 0 and hash == ARGV[2] then
  redis.call('DEL', code_key)
  return {0, 0}
end
left = math.max(left - 1, 0)
redis.call('HSET', code_key, 'left', left)
redis.call('EXPIRE', code_key, ARGV[6])
if left > 0 then return {1, left} end
local refused = blocked(now, cooldown, max_sends, window)
if refused then return {2, refused[2]} end
return {2, 1}
