-- users: sign-up (the store makes user names unique: UserRegistered is appended with
-- expect "new" on the key user-<name>), log-in (Argon2id hashes, signed expiring tokens), log-out
-- (SessionEnded, which the bfaf projects to refuse the token from then on), and the list of each
-- user's accounts (from AccountOpened). User names are case-insensitive.
--
-- Credential material never leaves this service readable: the password hash is sealed
-- (crypto.seal, under SEQUENT_USERS_SEAL_KEY, bound to the user's key) before it goes into the
-- UserRegistered event, so the stream's readers (analysts, the explorer, the live feed) hold only
-- noise, while a rebuild still restores log-in. Events from before the seal carry a peppered hash,
-- which still verifies.
--
-- Failed log-ins are limited per user name and per client address (the bfaf passes the
-- customer's address): past the limit the answer is 429 with Retry-After, whatever the password,
-- until the window ends. Sign-ups that hit a taken name count against the client's limit too, so
-- probing which names exist costs the same as guessing passwords.
-- The declaration: what the platform derives this service's rights from (superclient/README.md).
bus:register("users", {
  appends = { "UserRegistered", "SessionEnded" },
  sensitive = { UserRegistered = { "password_hash" } },
  mints_tokens = true,
  env = { "SEQUENT_USERS_MAX_FAILURES", "SEQUENT_USERS_MAX_CLIENT_FAILURES", "SEQUENT_USERS_FAILURE_WINDOW_S" },
})

local TOKEN_TTL = 8 * 3600 -- seconds
-- Failed log-ins allowed per user name, and per client address, within a window (seconds).
local MAX_FAILURES = math.tointeger(tonumber(bus:env("SEQUENT_USERS_MAX_FAILURES") or "")) or 5
local MAX_CLIENT_FAILURES = math.tointeger(tonumber(bus:env("SEQUENT_USERS_MAX_CLIENT_FAILURES") or "")) or 20
local FAILURE_WINDOW = math.tointeger(tonumber(bus:env("SEQUENT_USERS_FAILURE_WINDOW_S") or "")) or 900

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

-- Passwords everyone tries first (lower case; those under 8 characters are refused anyway).
local COMMON = {}
for _, p in ipairs({
  "12345678", "123456789", "1234567890", "12345678910", "0123456789", "87654321", "987654321",
  "11111111", "00000000", "22222222", "33333333", "44444444", "55555555", "66666666", "77777777",
  "88888888", "99999999", "12121212", "11223344", "12341234", "12344321", "123123123", "123321123",
  "147258369", "159753159", "1234512345", "123456123456", "1q2w3e4r", "1q2w3e4r5t", "1q2w3e4r5t6y",
  "q1w2e3r4", "q1w2e3r4t5", "1qaz2wsx", "zaq12wsx", "1qazxsw2", "qazwsx123", "qwertyui", "qwertyuiop",
  "qwerty123", "qwerty1234", "qwerty12345", "qwe123qwe", "123qweasd", "qweasdzxc", "1234qwer",
  "asdfghjk", "asdfghjkl", "asdf1234", "asdfasdf", "zxcvbnm1", "zxcvbnm123", "abcd1234", "abc12345",
  "abc123456", "1234abcd", "a1b2c3d4", "1a2b3c4d", "aa123456", "password", "password1", "password12",
  "password123", "password1234", "password!", "passw0rd", "p@ssw0rd", "p@ssword", "pa55word",
  "passwort", "motdepasse", "contrasena", "1password", "mypassword", "iloveyou", "iloveyou1",
  "iloveyou2", "loveyou1", "sunshine", "sunshine1", "princess", "princess1", "football", "football1",
  "baseball", "baseball1", "basketball", "welcome1", "welcome123", "letmein1", "letmein123",
  "trustno1", "superman", "starwars", "whatever", "computer", "internet", "midnight", "mustang1",
  "jennifer", "michael1", "jordan23", "charlie1", "chocolate", "maverick", "liverpool", "chelsea1",
  "arsenal1", "newyork1", "samsung1", "google123", "admin123", "admin1234", "administrator",
  "changeme", "changeme1", "changeme123", "default1", "secret123", "test1234", "testtest",
  "testing123", "guest123", "root1234", "hello123", "hellohello", "helloworld", "monkey123",
  "dragon123", "master123", "shadow123", "babygirl", "butterfly", "pokemon1", "minecraft",
  "fuckyou1", "killer12", "lovely12", "blink182", "michelle", "jessica1", "ashley12", "daniel12",
  "thomas12", "nicole12", "12qwaszx", "zaqxswcde", "qwertyqwerty", "azertyuiop", "azerty123",
  "sequent1", "sequent123", "bankbank", "money123", "letmeinplease",
}) do COMMON[p] = true end

-- Why a password is too easy to guess, or nil: one of the most common, the user name in it, a
-- single repeated character or two, or a run such as 12345678 or hgfedcba.
local function weak_password(p, username)
  local lower = p:lower()
  if COMMON[lower] then return "That password is one of the most common ones; choose another." end
  if #username >= 3 and lower:find(username:lower(), 1, true) then return "The password must not contain the username." end
  local distinct = {}
  local n = 0
  for c in p:gmatch(".") do
    if not distinct[c] then distinct[c] = true; n = n + 1 end
  end
  if n <= 2 then return "That password repeats one or two characters; choose a longer mix." end
  local step = p:byte(2) - p:byte(1)
  if step == 1 or step == -1 then
    local run = true
    for i = 3, #p do
      if p:byte(i) - p:byte(i - 1) ~= step then run = false break end
    end
    if run then return "That password is a simple sequence; choose another." end
  end
  return nil
end

-- The client's address as the bfaf passed it ("direct" for callers on this host).
local function client_of(body)
  local c = type(body.client) == "string" and body.client:gsub("[^%w.:%-]", "") or ""
  if c == "" or #c > 64 then return "direct" end
  return c
end

-- Failures within the current window: {n, ends} (ends: seconds since the epoch).
local function failures(key, now)
  local f = redis:get(key)
  if type(f) ~= "table" or type(f.ends) ~= "number" or f.ends <= now then return { n = 0, ends = now + FAILURE_WINDOW } end
  return f
end

local function record_failure(key, f, now)
  f.n = f.n + 1
  redis:set(key, f, { ttl_ms = math.max(1, f.ends - now) * 1000 })
end

-- Errors are RFC 9457 problem details: the runtime's `problem(status, code, detail, extra)`.
local function bad(message) return problem(HTTP_BAD_REQUEST, "invalid request", message) end
local function too_many(retry_after)
  return problem(HTTP_TOO_MANY_REQUESTS, "too many attempts",
    "Too many failed attempts; try again in " .. retry_after .. " seconds.", { retry_after = retry_after })
end

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
  local weak = weak_password(body.password, body.username)
  if weak then return problem(HTTP_BAD_REQUEST, "weak password", weak) end
  local now = os.time()
  local client_key = "fails:client:" .. client_of(body)
  local cf = failures(client_key, now)
  if cf.n >= MAX_CLIENT_FAILURES then return too_many(cf.ends - now) end
  local key = user_key(body.username)
  -- Sealed, and bound to the user's key: readers of the stream see noise, and the sealed hash
  -- of one user cannot be passed off as another's.
  local sealed = crypto.seal(crypto.hash_password(body.password), key)
  local receipt = bus:send("UserRegistered", key, "new", nil, {
    username = body.username, password_hash = sealed,
  })
  if receipt.status == "conflict" then
    record_failure(client_key, cf, now)
    return problem(HTTP_CONFLICT, "username taken", "That username is taken.")
  end
  -- Read-your-writes: log-in (on any instance) must find the user right after this answer.
  local me = identity(body.username)
  if not bus:wait(10000, function() return redis:exists("user:" .. me) end) then
    return problem(HTTP_GATEWAY_TIMEOUT, "timeout", "Signed up, but not ready yet; try logging in in a moment.")
  end
  return HTTP_CREATED, { username = body.username }
end)

-- The hash to verify a password against: opened when sealed (events from before the seal carry
-- the peppered hash itself).
local function stored_hash(user)
  local h = user.password_hash
  if not crypto.is_sealed(h) then return h end
  local opened, why = crypto.open(h, user_key(user.username))
  if not opened then log:error("users: the password hash of " .. identity(user.username) .. " cannot be opened: " .. why) end
  return opened
end

-- Verified when the user name is unknown, so that the answer takes as long as for a wrong
-- password (made once per Lua state).
local DUMMY_HASH

bus:add_route("/sessions", "POST", function(method, path, params, body)
  if type(body) ~= "table" or type(body.username) ~= "string" or type(body.password) ~= "string" then
    return bad("Send a username and a password.")
  end
  local now = os.time()
  local named = valid_username(body.username)
  local name_key = named and "fails:name:" .. identity(body.username) or nil
  local client_key = "fails:client:" .. client_of(body)
  local nf = name_key and failures(name_key, now) or { n = 0, ends = now }
  local cf = failures(client_key, now)
  -- Over a limit: refused whatever the password (a right guess now would tell nothing either).
  if nf.n >= MAX_FAILURES or cf.n >= MAX_CLIENT_FAILURES then
    local ends = nf.n >= MAX_FAILURES and nf.ends or cf.ends
    if cf.n >= MAX_CLIENT_FAILURES then ends = math.max(ends, cf.ends) end
    return too_many(math.max(1, ends - now))
  end
  local user = named and redis:get("user:" .. identity(body.username))
  local ok
  if user then
    local hash = stored_hash(user)
    ok = hash ~= nil and crypto.verify_password(body.password, hash)
  else
    -- The same work as a wrong password, so that the time taken does not tell which names exist.
    DUMMY_HASH = DUMMY_HASH or crypto.hash_password(crypto.random_hex(16))
    crypto.verify_password(body.password ~= "" and body.password or "x", DUMMY_HASH)
    ok = false
  end
  if not ok then
    if name_key then record_failure(name_key, nf, now) end
    record_failure(client_key, cf, now)
    return problem(HTTP_UNAUTHORIZED, "invalid credentials", "Wrong username or password.")
  end
  if nf.n > 0 then redis:del(name_key) end
  local me = identity(user.username)
  local token = crypto.token(me, TOKEN_TTL, { role = "customer", username = user.username })
  return HTTP_OK, {
    token = token,
    username = user.username,
    expires_at = os.date("!%Y-%m-%dT%H:%M:%SZ", os.time() + TOKEN_TTL),
  }
end)

-- Log-out: the session's token is refused from now on, everywhere (the bfaf projects
-- SessionEnded), also after a restart or a rebuild; until it would have expired anyway.
bus:add_route("/sessions", "DELETE", function(method, path, params, body)
  if type(body) ~= "table" or type(body.token) ~= "string" then return bad("Send the session's token.") end
  local claims = crypto.verify_token(body.token, { issuer = "users" })
  if not claims or type(claims.jti) ~= "string" or not claims.jti:match("^%x+$") or #claims.jti > 64 then
    return problem(HTTP_UNAUTHORIZED, "unauthorized", "That session is not valid (expired or ended).")
  end
  -- A second log-out of the same session conflicts on the key: it ended already.
  bus:send("SessionEnded", "session-" .. claims.jti, "new", nil, {
    token_id = claims.jti, username = claims.sub, expires_at = claims.exp,
  })
  return HTTP_OK, { status = "ended", token_id = claims.jti, expires_at = claims.exp }
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
