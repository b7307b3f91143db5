-- The talk's pattern, written as a new user would: one counter shared by every key, read then
-- written back (a get and a set, no atomic increment). Handlers of different keys run at the
-- same time in different partitions and instances; the superclient's serializable state makes
-- the counter count every event exactly once.
bus:register("test")

bus:add_event_listener("Counted", function(event_type, key, correlation, data, meta)
  local n = redis:get("shared") or 0
  redis:set("shared", n + 1)
  redis:incr("count:" .. key)
end)
