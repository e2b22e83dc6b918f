-- RateLimitStore::take_back. KEYS[1]: the counter (hash: end = window end, n = hits).
-- ARGV: window end. Reply: 0. One hit less, if the counter is of that window and above zero.
local counter = redis.call('HMGET', KEYS[1], 'end', 'n')
local hits = tonumber(counter[2])
if counter[1] == ARGV[1] and hits and hits > 0 then
  redis.call('HSET', KEYS[1], 'n', hits - 1)
end
return 0
