-- Shared by the OTP scripts (prepended to each, so every script stays one EVALSHA).
-- KEYS[1]: the pending code (hash: h = code hash hex, exp = expiry, left = attempts left)
-- KEYS[2]: the send times (list of unix seconds, oldest first)
-- KEYS[3]: the failure budget (hash: n = consecutive wrong codes and exp = when n is
--          forgotten, or until = the end of the lock while the phone is locked)
local code_key, sends_key, guard_key = KEYS[1], KEYS[2], KEYS[3]

local function corrupt(what)
  return redis.error_reply('CORRUPT ' .. what)
end

-- Drops sends that left the window and a pending code that expired.
local function forget_old(now, window)
  while true do
    local oldest = redis.call('LINDEX', sends_key, 0)
    if not oldest then break end
    local at = tonumber(oldest)
    if not at then return corrupt('send time') end
    if at + window <= now then
      redis.call('LPOP', sends_key)
    else
      break
    end
  end
  local exp = redis.call('HGET', code_key, 'exp')
  if exp then
    local at = tonumber(exp)
    if not at then return corrupt('code expiry') end
    if at <= now then redis.call('DEL', code_key) end
  end
  local guard = redis.call('HMGET', guard_key, 'exp', 'until')
  for i = 1, 2 do
    if guard[i] then
      local at = tonumber(guard[i])
      if not at then return corrupt('failure budget') end
      if at <= now then redis.call('DEL', guard_key) end
    end
  end
  return nil
end

-- Seconds left of the phone's lock, or nil if it is not locked (after forget_old).
local function lock_left(now)
  local until_at = tonumber(redis.call('HGET', guard_key, 'until'))
  if until_at then return until_at - now end
  return nil
end

-- Counts a wrong code. The max_failures-th locks the phone for lockout seconds and drops its
-- pending code (reply nil); otherwise the count is kept for lockout seconds after this miss
-- and the misses left before the lock are returned.
local function count_failure(now, max_failures, lockout)
  local n = redis.call('HINCRBY', guard_key, 'n', 1)
  if n >= max_failures then
    redis.call('DEL', guard_key, code_key)
    redis.call('HSET', guard_key, 'until', now + lockout)
    redis.call('EXPIRE', guard_key, math.max(lockout, 1))
    return nil
  end
  redis.call('HSET', guard_key, 'exp', now + lockout)
  redis.call('EXPIRE', guard_key, math.max(lockout, 1))
  return max_failures - n
end

-- Why a code cannot be issued now: {2, secs} for a full window (wins over the cooldown, and
-- waits for both), {1, secs} for the cooldown, nil if it can.
local function blocked(now, cooldown_secs, max_sends, window)
  local cooldown = 0
  local last = redis.call('LINDEX', sends_key, -1)
  if last then cooldown = math.max(0, tonumber(last) + cooldown_secs - now) end
  local wait = 0
  local sends = redis.call('LLEN', sends_key)
  if sends > 0 and sends >= max_sends then
    wait = math.max(0, tonumber(redis.call('LINDEX', sends_key, 0)) + window - now)
  end
  if wait > 0 then
    return {2, math.max(wait, cooldown)}
  elseif cooldown > 0 then
    return {1, cooldown}
  end
  return nil
end
