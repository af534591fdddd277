-- Reads a range of a document's log together with its head and epoch, so
-- the caller can tell a trimmed range from an empty one consistently.
-- KEYS[1] meta hash, KEYS[2] log stream
-- ARGV[1] from (exclusive), ARGV[2] to (inclusive, negative = head)
-- Returns {head, epoch, e1, e2, ...} or {} when the meta hash is missing.
local m = redis.call('HMGET', KEYS[1], 'head', 'epoch')
if not m[1] or not m[2] then
  return {}
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
