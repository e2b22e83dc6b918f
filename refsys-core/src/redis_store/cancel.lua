-- OtpStore::cancel. ARGV: code hash hex, issued_at. Reply: 0.
if redis.call('HGET', code_key, 'h') == ARGV[1] then
  redis.call('DEL', code_key)
end
redis.call('LREM', sends_key, -1, ARGV[2])
return 0
