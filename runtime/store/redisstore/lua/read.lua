-- Reads a range of a document's log together with its head and epoch, so
-- the caller can tell a trimmed range from an empty one consistently.
-- KEYS[1] meta hash, KEYS[2] log stream
-- ARGV[1] from (exclusive), ARGV[2] to (inclusive, negative = head),
-- ARGV[3] idle TTL in milliseconds: keys that expire (fully persisted) get
-- it again, so a document someone reads or watches stays (0: leave as is)
-- Returns {head, epoch, e1, e2, ...} or {} when the meta hash is missing.
local m = redis.call('HMGET', KEYS[1], 'head', 'epoch')
if not m[1] or not m[2] then
  return {}
end
local ttl = tonumber(ARGV[3] or '0')
if ttl > 0 and redis.call('PTTL', KEYS[1]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
local head = tonumber(m[1])
local from = tonumber(ARGV[1])
local to = tonumber(ARGV[2])
if to < 0 or to > head then
  to = head
end
local out = {m[1], m[2]}
if from >= to then
  return out
end
local rows = redis.call('XRANGE', KEYS[2], string.format('%d-1', from + 1), string.format('%d-1', to))
for _, row in ipairs(rows) do
  -- row = {id, {field, value}}
  out[#out + 1] = row[2][2]
end
return out
