-- Test service for the superclient tests: counts events per key and records what it saw.
-- The types the tests append as it (and its Pong): under the auth callout
-- (partitions.rs) the gateway holds it to them.
bus:register("test", { appends = { "Counted", "Ping", "Pong" } })

local function count(event_type, key, correlation, data, meta)
  -- A test switches a key to failing by setting fail:<key> (poison / parking tests).
  if redis:get("fail:" .. key) then
    error("key " .. key .. " is switched to fail")
  end
  if data.spin then
    while true do end -- a runaway handler: the instruction budget must stop it
  end
  if data.busy_ms then
    -- A slow handler (CPU time): batches that take a while, with more deliveries in hand.
    local started = os.clock()
    while (os.clock() - started) * 1000 < data.busy_ms do end
  end
  redis:incr("count:" .. key)
  redis:rpush("seqs:" .. key, meta.seq)
  redis:hset("redelivered", meta.seq, meta.redelivered)
  redis:hincr("total", "events", 1)
  if not meta.rebuild then
    redis:sadd("instances:" .. key, bus:instance())
  end
end

-- Used live and in rebuilds (there it rebuilds the same counters, without the instance set).
bus:add_event_listener("Counted", count, { rebuild = true })

-- Emits a follow-up event, to test derived ids and receipts.
bus:add_event_listener("Ping", function(event_type, key, correlation, data, meta)
  bus:send("Pong", key, "any", nil, { n = data.n })
end)
bus:add_receipt_listener("Pong", function(status, event_type, key, correlation, data, receipt)
  redis:rpush("receipts", { status = status, key = key, n = data.n, version = receipt.version })
end)

bus:add_route("/count/{key}", "GET", function(method, path, params, body, query)
  local n = redis:get("count:" .. params.key)
  if n == nil then
    return HTTP_NOT_FOUND, { error = "no events for " .. params.key }
  end
  return HTTP_OK, { key = params.key, count = n, seqs = redis:lrange("seqs:" .. params.key) }
end)
