-- users: sign-up (the store makes user names unique: UserRegistered is appended with
-- expect "new" on the key user-<name>), log-in (Argon2id hashes, signed expiring tokens), and
-- the list of each user's accounts (from AccountOpened). User names are case-insensitive.
-- The declaration: what the platform derives this service's rights from (superclient/README.md).
bus:register("users", {
  appends = { "UserRegistered" },
  sensitive = { UserRegistered = { "password_hash" } },
  mints_tokens = true,
})

local TOKEN_TTL = 8 * 3600 -- seconds

-- The user's identity: the lower-case name. The event key maps '.' (a NATS separator, not
-- allowed in keys) to '~' (not allowed in names), so distinct names get distinct keys.
local function identity(name) return name:lower() end
local function user_key(name) return "user-" .. (identity(name):gsub("%.", "~")) end

local function valid_username(u)
  return type(u) == "string" and #u >= 3 and #u <= 32 and u:match("^[A-Za-z0-9._-]+$") ~= nil
end
local function valid_password(p)
  local n = type(p) == "string" and utf8.len(p)
  return n and n >= 8 and n <= 128 and not p:find("%z")
end

-- Errors are RFC 9457 problem details (protocol/src/problem.rs; the same helper is in each
-- service): `code` is the machine-readable reason, `type` and `title` are derived from it,
-- `detail` is for a person, `extra` adds extension members.
local function problem(status, code, detail, extra)
  local body = {
    type = "urn:sequent:problem:" .. (code:lower():gsub("[^%w]+", "-"):gsub("^%-+", ""):gsub("%-+$", "")),
    title = (code:gsub("[_%-]", " "):gsub("^%l", string.upper)),
    status = status, detail = detail, code = code,
  }
  for k, v in pairs(extra or {}) do body[k] = v end
  return status, body
end
local function bad(message) return problem(HTTP_BAD_REQUEST, "invalid request", message) end

-- Projection: user:<identity> {username, password_hash, registered_at};
-- accounts:<identity> account id -> stream seq (opening order).
bus:add_event_listener("UserRegistered", function(event_type, key, correlation, data, meta)
  redis:set("user:" .. identity(data.username), {
    username = data.username, password_hash = data.password_hash, registered_at = meta.time,
  })
end, { rebuild = true })

bus:add_event_listener("AccountOpened", function(event_type, key, correlation, data, meta)
  redis:hset("accounts:" .. data.owner, key, meta.seq)
end, { rebuild = true })

bus:add_route("/users", "POST", function(method, path, params, body)
  if type(body) ~= "table" then return bad("Send a username and a password.") end
  if not valid_username(body.username) then
    return bad("Username must be 3 to 32 characters: letters, digits, '.', '_' or '-'.")
  end
  if not valid_password(body.password) then return bad("Password must be 8 to 128 characters.") end
  local hash = crypto.hash_password(body.password)
  local receipt = bus:send("UserRegistered", user_key(body.username), "new", nil, {
    username = body.username, password_hash = hash,
  })
  if receipt.status == "conflict" then
    return problem(HTTP_CONFLICT, "username taken", "That username is taken.")
  end
  -- Read-your-writes: log-in (on any instance) must find the user right after this answer.
  local me = identity(body.username)
  if not bus:wait(10000, function() return redis:exists("user:" .. me) end) then
    return problem(HTTP_GATEWAY_TIMEOUT, "timeout", "Signed up, but not ready yet; try logging in in a moment.")
  end
  return HTTP_CREATED, { username = body.username }
end)

bus:add_route("/sessions", "POST", function(method, path, params, body)
  if type(body) ~= "table" or type(body.username) ~= "string" or type(body.password) ~= "string" then
    return bad("Send a username and a password.")
  end
  local user = valid_username(body.username) and redis:get("user:" .. identity(body.username))
  if not user then
    -- Spend the time a check would take, so that timing does not tell which names exist.
    crypto.hash_password(body.password ~= "" and body.password or "x")
    return problem(HTTP_UNAUTHORIZED, "invalid credentials", "Wrong username or password.")
  end
  if not crypto.verify_password(body.password, user.password_hash) then
    return problem(HTTP_UNAUTHORIZED, "invalid credentials", "Wrong username or password.")
  end
  local me = identity(user.username)
  local token = crypto.token(me, TOKEN_TTL, { role = "customer", username = user.username })
  return HTTP_OK, {
    token = token,
    username = user.username,
    expires_at = os.date("!%Y-%m-%dT%H:%M:%SZ", os.time() + TOKEN_TTL),
  }
end)

-- The user's accounts, oldest first. `wait_for=<account id>` waits (up to `timeout_ms`) until
-- that account is listed: read-your-writes after opening one.
bus:add_route("/users/{name}/accounts", "GET", function(method, path, params, body, query)
  local me = identity(params.name)
  if not redis:exists("user:" .. me) then return problem(HTTP_NOT_FOUND, "not found", "No such user.") end
  if query.wait_for then
    local timeout = math.min(tonumber(query.timeout_ms or "5000") or 5000, 30000)
    local listed = bus:wait(timeout, function() return redis:hget("accounts:" .. me, query.wait_for) ~= nil end)
    if not listed then
      return problem(HTTP_GATEWAY_TIMEOUT, "timeout", "The new account is not listed yet.")
    end
  end
  local seqs = redis:hgetall("accounts:" .. me)
  local ids = json.array {}
  for id in pairs(seqs) do ids[#ids + 1] = id end
  table.sort(ids, function(a, b) return seqs[a] < seqs[b] end)
  return HTTP_OK, { username = me, accounts = ids }
end)
