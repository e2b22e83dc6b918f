-- RateLimitStore::hit_sliding. KEYS[1]: the counter (hash: end = window end, n = hits in
-- that window, p = hits in the window before). ARGV: limit, window end, window length, now,
-- key ttl (all seconds). Reply: {1, p, n} allowed, {0, p, n} limited, with p and n as they
-- are after the call. The estimate is refsys_core::store::sliding_estimate's.
local limit = tonumber(ARGV[1])
local window_end = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
local counter = redis.call('HMGET', KEYS[1], 'end', 'n', 'p')
local stored_end = tonumber(counter[1])
local n, p = 0, 0
if stored_end == window_end then
  n = tonumber(counter[2])
  p = tonumber(counter[3] or '0')
  if not n or not p then return redis.error_reply('CORRUPT hit count') end
elseif stored_end == window_end - window then
  p = tonumber(counter[2])
  if not p then return redis.error_reply('CORRUPT hit count') end
end
local left = math.min(window_end - now, window)
local carried = math.floor((p * left + window - 1) / window)
if carried + n >= limit then return {0, p, n} end
n = n + 1
redis.call('HSET', KEYS[1], 'end', ARGV[2], 'n', n, 'p', p)
redis.call('EXPIRE', KEYS[1], ARGV[5])
return {1, p, n}
