-- Releases a document's owner lease if the caller still holds it
-- (compare-and-delete), so a replica whose lease expired and was taken by
-- another cannot delete the new holder's lease.
-- KEYS[1] owner key
-- ARGV[1] replica id
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
