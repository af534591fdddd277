-- Records that PostgreSQL holds a document up to a revision and trims the
-- log below it, keeping a tail for reconnecting clients that is bounded in
-- entries and in bytes. Once everything is persisted, the document's keys
-- expire after an idle TTL (refreshed by reads and removed by appends).
-- KEYS[1] meta hash, KEYS[2] log stream
-- ARGV[1] epoch the flushed entries were read under, ARGV[2] revision now
-- in PostgreSQL, ARGV[3] tail length to keep, ARGV[4] tail bytes to keep,
-- ARGV[5] idle TTL in milliseconds (0: never expire)
-- Returns the persisted revision, or -1 when the epoch changed meanwhile.
local m = redis.call('HMGET', KEYS[1], 'epoch', 'persisted', 'head', 'bytes')
if not m[1] or m[1] ~= ARGV[1] then
  return -1
end
local persisted = tonumber(m[2] or '0')
local rev = tonumber(ARGV[2])
if rev > persisted then
  persisted = rev
  redis.call('HSET', KEYS[1], 'persisted', string.format('%d', rev))
end
local maxLen = tonumber(ARGV[3])
local maxBytes = tonumber(ARGV[4])
local bytes = tonumber(m[4] or '0')
local len = redis.call('XLEN', KEYS[2])
-- Drop the oldest persisted entries while the tail is over either bound;
-- an entry not yet persisted is never dropped.
while len > maxLen or bytes > maxBytes do
  local rows = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 128)
  if #rows == 0 then
    break
  end
  local cut = nil
  for _, row in ipairs(rows) do
    if len <= maxLen and bytes <= maxBytes then
      break
    end
    local r = tonumber(string.match(row[1], '^(%d+)'))
    if r > persisted then
      break
    end
    bytes = bytes - #row[2][2]
    len = len - 1
    cut = r
  end
  if not cut then
    break
  end
  redis.call('XTRIM', KEYS[2], 'MINID', string.format('%d-1', cut + 1))
end
if bytes < 0 then
  bytes = 0
end
redis.call('HSET', KEYS[1], 'bytes', string.format('%d', bytes))
local ttl = tonumber(ARGV[5])
if ttl > 0 and persisted >= tonumber(m[3] or '0') then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return persisted
