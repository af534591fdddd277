-- Takes or renews a document's owner lease.
-- KEYS[1] owner key
-- ARGV[1] replica id, ARGV[2] lease TTL in milliseconds
-- Returns {holder, acquired}: acquired is 1 when the lease was free and is
-- now ARGV[1]'s, 0 when it was renewed or is held by another replica.
local cur = redis.call('GET', KEYS[1])
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {ARGV[1], 1}
end
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return {cur, 0}
