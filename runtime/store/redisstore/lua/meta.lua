-- Seeds a document's metadata if it is missing and returns it.
-- KEYS[1] meta hash, KEYS[2] log stream
-- ARGV[1] revision PostgreSQL holds, ARGV[2] a fresh epoch, ARGV[3] idle
-- TTL in milliseconds (0: none): a seeded document is fully persisted
-- Returns {head, epoch, persisted, seeded(0|1)}.
--
-- A missing meta hash means the document was never opened or Redis lost
-- it. Either way any leftover stream cannot be trusted against a new head,
-- so it is dropped and the document restarts from PostgreSQL's revision
-- under a new epoch: a replica still holding the old epoch is refused on
-- its next append instead of silently extending a history that is gone.
local m = redis.call('HMGET', KEYS[1], 'head', 'epoch', 'persisted')
if m[1] and m[2] then
  return {m[1], m[2], m[3] or '0', 0}
end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'head', ARGV[1], 'epoch', ARGV[2], 'persisted', ARGV[1])
local ttl = tonumber(ARGV[3] or '0')
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return {ARGV[1], ARGV[2], ARGV[1], 1}
