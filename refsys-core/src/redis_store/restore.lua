-- OtpStore::restore. ARGV: now, code hash hex. Reply: 0.
-- The code becomes pending again if it is the phone's last code, was used (u = 1), and has
-- not expired.
local now = tonumber(ARGV[1])
local pending = redis.call('HMGET', code_key, 'h', 'exp', 'u')
local exp = tonumber(pending[2])
if pending[1] == ARGV[2] and pending[3] and exp and exp > now then
  redis.call('HDEL', code_key, 'u')
end
return 0
