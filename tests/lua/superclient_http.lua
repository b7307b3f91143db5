-- Test service for the superclient's HTTP routes and sandbox.
bus:register("example", { mints_tokens = true }) -- crypto.token below

bus:add_event_listener("Noted", function(event_type, key, correlation, data, meta)
  redis:rpush("notes:" .. key, data.text)
end)

bus:add_route("/echo/{a}/{b}", "POST", function(method, path, params, body, query)
  return HTTP_CREATED, { method = method, path = path, params = params, body = body, query = query }
end)

bus:add_route("/echo/fixed/{b}", "POST", function(method, path, params, body, query)
  return HTTP_OK, { fixed = true, b = params.b }
end)

bus:add_route("/items/{id}", "PUT", function(method, path, params, body, query)
  if type(body) ~= "table" or type(body.price_cents) ~= "number" then
    return HTTP_UNPROCESSABLE_ENTITY, { error = "price_cents (integer) is required" }
  end
  redis:set("item:" .. params.id, body)
  redis:hincr("stats", "puts", 1)
  return HTTP_OK, { stored = redis:get("item:" .. params.id), puts = redis:hget("stats", "puts") }
end)

bus:add_route("/items/{id}", "GET", function(method, path, params, body, query)
  local item = redis:get("item:" .. params.id)
  if not item then return HTTP_NOT_FOUND, { error = "no item " .. params.id } end
  return HTTP_OK, item
end)

-- Sends from a route are published at once and return their receipt.
bus:add_route("/open/{key}", "POST", function(method, path, params, body, query)
  local receipt = bus:send("Opened", params.key, "new", nil, { by = "route" })
  if receipt.status == "conflict" then
    return HTTP_CONFLICT, { error = "already open", current_version = receipt.current_version }
  end
  return HTTP_CREATED, receipt
end)

bus:add_route("/boom", "GET", function() error("this route always fails") end)
bus:add_route("/bad-return", "GET", function() return "not a status" end)

bus:add_route("/loop", "GET", function()
  while true do end
end)

-- pcall must not swallow the instruction budget.
bus:add_route("/sneaky-loop", "GET", function()
  while true do pcall(function() while true do end end) end
end)

bus:add_route("/bomb", "GET", function()
  local t = {}
  for i = 1, 1e9 do t[i] = string.rep("x", 65536) .. i end
  return HTTP_OK, { n = #t }
end)

-- Tries what a sandboxed script must not do and reports each outcome.
bus:add_route("/forbidden", "GET", function()
  local out = {}
  local function try(name, f)
    local ok, err = pcall(f)
    out[name] = ok and "ALLOWED" or tostring(err)
  end
  try("io.open", function() return io.open("/etc/passwd") end)
  try("os.execute", function() return os.execute("true") end)
  try("os.exit", function() return os.exit(1) end)
  try("os.remove", function() return os.remove("/tmp/x") end)
  try("debug.getinfo", function() return debug.getinfo(1) end)
  try("dofile", function() return dofile("/etc/passwd") end)
  try("loadfile", function() return loadfile("/etc/passwd") end)
  try("require", function() return require("os") end)
  try("string.dump", function() return string.dump(function() end) end)
  try("load bytecode", function()
    local f, err = load("\27Lua", "x", "b")
    if not f then error(err) end
  end)
  -- Keys named like the superclient's own are the script's: mapped, never the framework's.
  out.framework_key = tostring(redis:get("__applied:0"))
  redis:set("__applied:0", "mine")
  out.load_text = load("return 1 + 1")()
  out.os_time = type(os.time())
  return HTTP_OK, out
end)

bus:add_route("/ok", "GET", function() return HTTP_OK, { ok = true } end)

-- Argon2id of "pw1" without a pepper (as hashed before the pepper existed).
local LEGACY_HASH = "$argon2id$v=19$m=19456,t=2,p=1$c2VxdWVudGxlZ2FjeQ$9LEWgqjja3hJGEyKv4m+G+nXfgM9UOH6sm5n9lidwOk"

bus:add_route("/token/{user}", "POST", function(method, path, params, body)
  local hash = crypto.hash_password(body.password)
  local token = crypto.token(params.user, 60, { role = "customer" })
  local claims = crypto.verify_token(token)
  local _, why = crypto.verify_token(token .. "x")
  local phc = hash:match("^peppered:(.*)$")
  return HTTP_OK, {
    verified = crypto.verify_password(body.password, hash),
    wrong = crypto.verify_password("nope", hash),
    peppered = phc ~= nil and phc:sub(1, 10) == "$argon2id$",
    -- What someone who has the hash but not the pepper can check: nothing.
    without_pepper = crypto.verify_password(body.password, phc or hash),
    legacy = crypto.verify_password(body.password, LEGACY_HASH),
    legacy_wrong = crypto.verify_password("nope", LEGACY_HASH),
    sub = claims.sub, role = claims.role, tampered = why,
  }
end)
