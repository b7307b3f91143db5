-- A route that sends twice, each time on a shared key it read: POST /cross/ab reads "a", sends,
-- works 150 ms, reads "b" and sends again; /cross/ba the same in the opposite order. A route's
-- send locks what it read until its commit, so two such requests at once each hold the key
-- the other needs for its second send (superclient/README.md, "Serializable state").
bus:register("test")

bus:add_route("/cross/{order}", "POST", function(method, path, params, body, query)
  local first, second = params.order:sub(1, 1), params.order:sub(2, 2)
  local n = tonumber(redis:get("k" .. first) or "0")
  bus:send("Crossed", "c-" .. first, "any", nil, { order = params.order })
  local started = os.clock()
  while (os.clock() - started) * 1000 < 150 do end
  local m = tonumber(redis:get("k" .. second) or "0")
  bus:send("Crossed", "c-" .. second, "any", nil, { order = params.order })
  redis:set("k" .. first, tostring(n + 1))
  redis:set("k" .. second, tostring(m + 1))
  return HTTP_OK, { order = params.order }
end)
