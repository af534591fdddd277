-- Compare-and-set append of a batch of entries to a document's log.
-- KEYS[1] meta hash, KEYS[2] log stream
-- ARGV[1] epoch the caller knows, ARGV[2] expected head revision,
-- ARGV[3] publish command (PUBLISH, or SPUBLISH on a cluster, where the
-- channel shares the keys' hash tag and so their slot), ARGV[4] pub/sub
-- channel, ARGV[5] notification payload,
-- ARGV[6..] encoded entries, in revision order (expected+1, expected+2, ...)
-- Returns {'ok', newHead} | {'conflict', head} | {'epoch', epoch} | {'nometa'}.
local m = redis.call('HMGET', KEYS[1], 'head', 'epoch')
if not m[1] or not m[2] then
  return {'nometa'}
end
if m[2] ~= ARGV[1] then
  return {'epoch', m[2]}
end
local head = tonumber(m[1])
if head ~= tonumber(ARGV[2]) then
  return {'conflict', m[1]}
end
local rev = head
local bytes = 0
for i = 6, #ARGV do
  rev = rev + 1
  bytes = bytes + #ARGV[i]
  -- The stream ID is the revision itself, so XRANGE by revision is direct
  -- and a duplicate revision is impossible.
  redis.call('XADD', KEYS[2], string.format('%d-1', rev), 'e', ARGV[i])
end
redis.call('HSET', KEYS[1], 'head', string.format('%d', rev))
-- The tail's size in bytes, for trimming it by bytes (persisted.lua).
redis.call('HINCRBY', KEYS[1], 'bytes', bytes)
-- Not everything is persisted now: the keys must not expire.
redis.call('PERSIST', KEYS[1])
redis.call('PERSIST', KEYS[2])
redis.call(ARGV[3], ARGV[4], ARGV[5])
return {'ok', string.format('%d', rev)}
