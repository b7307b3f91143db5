-- Test service for all-types listeners: `bus:add_event_listener("*", fn)` receives every event
-- type (audit, forwarding); a listener of the type's own wins over it.
bus:register("test")

local function audit(event_type, key, correlation, data, meta)
  -- A test switches a key to failing by setting fail:<key> (parking).
  if redis:get("fail:" .. key) then
    error("key " .. key .. " is switched to fail")
  end
  redis:incr("count:" .. key)
  redis:rpush("seqs:" .. key, meta.seq)
  redis:hincr("types", event_type, 1)
  -- Forwarding: one follow-up event per audited event, with a derived id (effectively once).
  if not meta.rebuild and event_type ~= "Audited" then
    bus:send("Audited", "audit-" .. key, "any", nil, { type = event_type, seq = meta.seq })
  end
end

bus:add_event_listener("*", audit, { rebuild = true })

-- Its own listener wins over "*" for this type.
bus:add_event_listener("Special", function(event_type, key, correlation, data, meta)
  redis:incr("special:" .. key)
end)
