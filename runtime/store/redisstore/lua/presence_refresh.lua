-- Keeps live presence entries alive for another TTL, without announcing
-- anything; returns the connections that have no live entry.
-- KEYS[1] entries hash, KEYS[2] expiry sorted set
-- ARGV[1] ttl in ms, ARGV[2..] connection ids
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local missing = {}
for i = 2, #ARGV do
  local conn = ARGV[i]
  local exp = redis.call('ZSCORE', KEYS[2], conn)
  if exp and tonumber(exp) > now and redis.call('HEXISTS', KEYS[1], conn) == 1 then
    redis.call('ZADD', KEYS[2], now + tonumber(ARGV[1]), conn)
  else
    missing[#missing + 1] = conn
  end
end
return missing
