-- Deletes expired entries and returns the live ones. Departures are
-- announced by the script itself, so each expiry is announced exactly once
-- no matter how many replicas sweep.
-- KEYS[1] entries hash, KEYS[2] expiry sorted set; ARGV[1] channel,
-- ARGV[2] publish command (PUBLISH, or SPUBLISH on a cluster)
-- Returns a flat list of live encoded entries.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, conn in ipairs(expired) do
  local raw = redis.call('HGET', KEYS[1], conn)
  redis.call('HDEL', KEYS[1], conn)
  redis.call('ZREM', KEYS[2], conn)
  if raw then
    redis.call(ARGV[2], ARGV[1], '{"left":true,"entry":' .. raw .. '}')
  end
end
-- Hash fields without an expiry (should not happen) are dropped too.
local live = {}
for _, conn in ipairs(redis.call('HKEYS', KEYS[1])) do
  if redis.call('ZSCORE', KEYS[2], conn) then
    live[#live + 1] = redis.call('HGET', KEYS[1], conn)
  else
    redis.call('HDEL', KEYS[1], conn)
  end
end
return live
