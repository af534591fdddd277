-- Inserts or refreshes a presence entry and announces it.
-- KEYS[1] entries hash, KEYS[2] expiry sorted set
-- ARGV[1] connection id, ARGV[2] encoded entry, ARGV[3] ttl in ms,
-- ARGV[4] channel, ARGV[5] event payload, ARGV[6] publish command
-- (PUBLISH, or SPUBLISH on a cluster)
-- Expiry uses the Redis server clock so replicas with skewed clocks agree.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
redis.call(ARGV[6], ARGV[4], ARGV[5])
return 1
