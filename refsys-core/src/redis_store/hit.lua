-- RateLimitStore::hit. KEYS[1]: the counter (hash: end = window end, n = hits).
-- ARGV: limit, window end, key ttl. Reply: {1, hits} allowed, {0, hits} limited.
local limit = tonumber(ARGV[1])
local counter = redis.call('HMGET', KEYS[1], 'end', 'n')
local hits = 0
if counter[1] == ARGV[2] then
  hits = tonumber(counter[2])
  if not hits then return redis.error_reply('CORRUPT hit count') end
end
if hits >= limit then return {0, hits} end
hits = hits + 1
redis.call('HSET', KEYS[1], 'end', ARGV[2], 'n', hits)
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {1, hits}
