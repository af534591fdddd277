-- Records that PostgreSQL holds a document up to a revision and trims the
-- log below it, keeping a tail for reconnecting clients.
-- KEYS[1] meta hash, KEYS[2] log stream
-- ARGV[1] epoch the flushed entries were read under, ARGV[2] revision now
-- in PostgreSQL, ARGV[3] tail length to keep below it
-- Returns the persisted revision, or -1 when the epoch changed meanwhile.
local m = redis.call('HMGET', KEYS[1], 'epoch', 'persisted')
if not m[1] or m[1] ~= ARGV[1] then
  return -1
end
local persisted = tonumber(m[2] or '0')
local rev = tonumber(ARGV[2])
if rev > persisted then
  persisted = rev
  redis.call('HSET', KEYS[1], 'persisted', string.format('%d', rev))
end
local keepFrom = persisted - tonumber(ARGV[3]) + 1
if keepFrom > 1 then
  redis.call('XTRIM', KEYS[2], 'MINID', string.format('%d-1', keepFrom))
end
return persisted
