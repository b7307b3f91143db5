-- Test service whose handler reads nothing from Redis: it only appends the event's position to
-- its key's list (a blind write), after an optional stretch of CPU work. Nothing it does fails
-- when Redis has lost the state under it, so only the commit can tell (superclient_rebuild.rs).
bus:register("test", { appends = { "Counted" } })

bus:add_event_listener("Counted", function(event_type, key, correlation, data, meta)
  if data.busy_ms then
    local started = os.clock()
    while (os.clock() - started) * 1000 < data.busy_ms do end
  end
  redis:rpush("seqs:" .. key, meta.seq)
end, { rebuild = true })
