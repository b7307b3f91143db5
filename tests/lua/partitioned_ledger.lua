-- Test service (registered as the test principal "test"): a ledger of entries per key whose state is partitioned over Redis Cluster
-- slots (state = "partitioned"): each key's state sits in the slot of its event key's partition.
bus:register("test", { state = "partitioned" })

-- Keys tagged with the event key ({key}) and the event key itself are in the event's partition.
bus:add_event_listener("Entered", function(event_type, key, correlation, data, meta)
  redis:incr("balance:{" .. key .. "}", data.amount)
  redis:rpush("seqs:{" .. key .. "}", meta.seq)
  redis:hincr(key, "entries", 1)
  -- A key of another partition: refused (the handler fails, the key parks).
  if data.reach then
    redis:incr("balance:{" .. data.reach .. "}", 1)
  end
end, { rebuild = true })

bus:add_route("/balance/{key}", "GET", function(method, path, params)
  local b = redis:get("balance:{" .. params.key .. "}")
  if b == nil then
    return HTTP_NOT_FOUND, { error = "no entries for " .. params.key }
  end
  return HTTP_OK, { key = params.key, balance = b, seqs = redis:lrange("seqs:{" .. params.key .. "}"), entries = redis:hget(params.key, "entries") }
end)

-- Reads many partitions, writes nothing.
bus:add_route("/total", "GET", function(method, path, params, body, query)
  local total = 0
  for key in string.gmatch(query.keys, "[^,]+") do
    total = total + (redis:get("balance:{" .. key .. "}") or 0)
  end
  return HTTP_OK, { total = total, keys = #redis:keys("balance:*") }
end)

-- Reads and writes one partition.
bus:add_route("/audit/{key}", "POST", function(method, path, params)
  local b = redis:get("balance:{" .. params.key .. "}") or 0
  redis:set("audited:{" .. params.key .. "}", b)
  return HTTP_OK, { audited = b }
end)

-- Writes two partitions: refused at commit.
bus:add_route("/copy/{from}/{to}", "POST", function(method, path, params)
  local b = redis:get("balance:{" .. params.from .. "}") or 0
  redis:set("audited:{" .. params.from .. "}", b)
  redis:set("audited:{" .. params.to .. "}", b)
  return HTTP_OK, {}
end)

-- Waits until a key's balance reaches a value (woken by the commit of its partition).
bus:add_route("/await/{key}/{at_least}", "GET", function(method, path, params)
  local want = tonumber(params.at_least)
  local reached = bus:wait(20000, function()
    return (redis:get("balance:{" .. params.key .. "}") or 0) >= want
  end)
  return HTTP_OK, { reached = reached }
end)
