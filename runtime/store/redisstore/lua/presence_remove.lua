-- Removes one entry and announces the departure if it was present; the
-- stored entry is sent along so listeners know whose it was.
-- KEYS[1] entries hash, KEYS[2] expiry sorted set
-- ARGV[1] connection id, ARGV[2] channel, ARGV[3] publish command
-- (PUBLISH, or SPUBLISH on a cluster)
local raw = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if raw then
  redis.call(ARGV[3], ARGV[2], '{"left":true,"entry":' .. raw .. '}')
  return 1
end
return 0
