-- Shared by the OTP scripts (prepended to each, so every script stays one EVALSHA).
-- KEYS[1]: the pending code (hash: h = code hash hex, exp = expiry, left = attempts left)
-- KEYS[2]: the send times (list of unix seconds, oldest first)
local code_key, sends_key = KEYS[1], KEYS[2]

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
  return nil
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
