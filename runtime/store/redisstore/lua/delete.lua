-- Deletes every key of a document and tells its subscribers.
-- KEYS[1] meta hash, KEYS[2] log stream, KEYS[3] owner lease,
-- KEYS[4] presence hash, KEYS[5] presence expiry set
-- ARGV[1] pub/sub channel, ARGV[2] notification payload (deleted),
-- ARGV[3] publish command (PUBLISH, or SPUBLISH on a cluster, where the
-- subscribers listen on sharded channels)
-- Returns the number of keys deleted.
local n = redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
redis.call(ARGV[3], ARGV[1], ARGV[2])
return n
