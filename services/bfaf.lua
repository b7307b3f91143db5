-- bfaf: the backend-for-frontend. Serves the built UI (ui/dist) at / and the JSON API under
-- /api (ui/API-ASSUMPTIONS.md); pushes live updates over WebSockets, fed by the event stream.
--
-- It keeps no state of its own: customers' requests go to the services that own the data
-- (http.call finds a live instance of a service type in the membership bucket), so every
-- answer is as fresh as the owning service's, and each service keeps its own rules. Live
-- updates come from live listeners: every bfaf instance reads the events as they are stored
-- and pushes them to the sockets connected to it.
-- The declaration: what the platform derives this service's rights from (superclient/README.md).
bus:register("bfaf", {
  http = "public",
  env = { "SEQUENT_UI_DIR", "SEQUENT_EXPLORER_URL" },
})

local MAX_AMOUNT = 100000000000
-- Account ids (acc-<hex>): the only destinations of money and the only account topics.
local function is_account_id(s) return type(s) == "string" and #s <= 64 and s:match("^acc%-[0-9a-f]+$") ~= nil end
-- User identities (lower-case names): the only `user:<name>` topics.
local function is_identity(s) return type(s) == "string" and #s >= 3 and #s <= 32 and s:match("^[a-z0-9._-]+$") ~= nil end

-- The built UI (SEQUENT_UI_DIR overrides; relative paths start at this script's directory).
bus:serve_static("/", bus:env("SEQUENT_UI_DIR") or "../ui/dist", { fallback = "index.html", exclude = { "/api/" } })
-- The API's OpenAPI 3.1 description (openapi/bank.json) and a page to browse it (/api/openapi/).
bus:serve_static("/api/openapi", "openapi")

-- ---------------------------------------------------------------------------------------------
-- Helpers

-- Errors are RFC 9457 problem details: the runtime's `problem(status, code, detail, extra)`
-- (sent as application/json: routes cannot set headers).
local err = problem
local function bad(message, code) return err(HTTP_BAD_REQUEST, code or "invalid request", message) end
local function unauthorized() return err(HTTP_UNAUTHORIZED, "unauthorized", "Your session expired, please log in again.") end
local function not_found(message) return err(HTTP_NOT_FOUND, "not found", message or "That account does not exist.") end
local function unavailable() return err(HTTP_SERVICE_UNAVAILABLE, "unavailable", "The bank is busy right now; please try again.") end

-- The codes of the superclient's own error answers, by status (they say no code of their own yet).
local BUILT_IN_CODES = {
  [400] = "bad_request", [401] = "unauthorized", [403] = "forbidden", [404] = "not_found",
  [405] = "method_not_allowed", [409] = "conflict", [413] = "too_large", [415] = "unsupported_media_type",
  [500] = "internal", [503] = "unavailable", [504] = "timeout",
}

-- An error answer of another service (or the gateway) as a problem: problems pass as they are;
-- an older `{error = code, message = ...}` keeps its code, message and other fields; the
-- superclient's built-in `{error = "sentence"}` gets the code of its status.
local function as_problem(status, body)
  if type(body) == "table" and type(body.code) == "string" and type(body.type) == "string" then return status, body end
  local code, detail, extra = BUILT_IN_CODES[status] or "error", nil, nil
  if type(body) == "table" then
    if type(body.error) == "string" and type(body.message) == "string" then
      code, detail = body.error, body.message
    elseif type(body.error) == "string" then
      detail = body.error
    end
    extra = {}
    for k, v in pairs(body) do
      if k ~= "error" and k ~= "message" then extra[k] = v end
    end
  elseif type(body) == "string" and body ~= "" then
    detail = body
  end
  return problem(status, code, detail or "The request failed.", extra)
end

local function bearer(headers, query)
  local h = headers.authorization
  if h then return h:match("^[Bb]earer%s+(%S+)$") end
  return query and query.token
end

-- The logged-in customer (the lower-case user name) and the token's claims, or nil. Only
-- tokens minted by the users service count, and only until their session ends (log-out): the
-- sessions ended are this service's own projection of SessionEnded (below).
local function customer(headers, query)
  local token = bearer(headers, query)
  if not token then return nil end
  local claims = crypto.verify_token(token, { issuer = "users" })
  if not claims or claims.role ~= "customer" or type(claims.sub) ~= "string" or type(claims.jti) ~= "string" then return nil end
  if redis:exists("ended:" .. claims.jti) then return nil end
  return claims.sub, claims
end

local function is_amount(x) return math.type(x) == "integer" and x > 0 and x <= MAX_AMOUNT end
local function invalid_amount()
  return bad("The amount must be a whole number of cents, more than 0 and at most " .. MAX_AMOUNT .. ".", "invalid amount")
end

-- Retries of the same request (same Idempotency-Key header) by the same customer get the same
-- request id, which the services use to do the work once.
local function request_id(user, headers, what)
  local key = headers["idempotency-key"]
  if key and #key > 0 and #key <= 200 then
    return crypto.sha256_hex(user .. "\0" .. what .. "\0" .. key):sub(1, 40)
  end
  return crypto.random_hex(20)
end

-- Calls a service; nil when none answers (the caller answers 503). A 503 (the service could not
-- finish: its state was busy or moving, e.g. while an instance hands its partitions over) is
-- asked again, twice at most, when that is safe: a read, or a request carrying its request id
-- (the services apply an id once).
local function call(service, method, path, body, opts)
  local safe = method == "GET" or (type(body) == "table" and body.request_id ~= nil)
  for attempt = 1, 3 do
    local r, e = http.call(service, method, path, body, opts)
    if not r then
      log:warn("bfaf: " .. e)
      return nil
    end
    if r.status ~= HTTP_SERVICE_UNAVAILABLE or not safe or attempt == 3 then return r end
    pcall(bus.wait, bus, 100 * attempt, function() return false end) -- a pause (routes only)
  end
end

-- A service's answer passed on (errors as problems), except its 5xx.
local function relay(r)
  if not r then return unavailable() end
  if r.status >= 500 and r.status ~= HTTP_GATEWAY_TIMEOUT then return unavailable() end
  if r.status >= 400 then return as_problem(r.status, r.body) end
  return r.status, r.body
end

local function enc(s) return (tostring(s):gsub("[^%w%-_~]", function(c) return string.format("%%%02X", string.byte(c)) end)) end

-- The account if it is the user's (nil, or nil plus a response when a service failed).
local function own_account(user, id)
  if not is_account_id(id) then return nil end
  local r = call("accounts", "GET", "/accounts/" .. enc(id), nil, { query = { owner = user } })
  if not r then return nil, { unavailable() } end
  if r.status == HTTP_OK then return r.body end
  if r.status == HTTP_NOT_FOUND then return nil end
  return nil, { unavailable() }
end

-- Whether the account is the user's (false, or false plus a response when a service failed). An
-- account's owner never changes, so a yes is kept (per Lua state, at most OWNERS_KEPT accounts):
-- a customer's later transfers from the same account need no call to accounts, which checks the
-- owner again when it decides the transfer.
local OWNERS_KEPT = 10000
local owners, owners_kept = {}, 0
local function owns(user, id)
  if owners[id] == user then return true end
  local account, failed = own_account(user, id)
  if not account then return false, failed end
  if owners_kept >= OWNERS_KEPT then owners, owners_kept = {}, 0 end
  owners[id], owners_kept = user, owners_kept + 1
  return true
end

local function user_account_ids(user)
  local r = call("users", "GET", "/users/" .. enc(user) .. "/accounts")
  if not r then return nil end
  if r.status == HTTP_NOT_FOUND then return {} end
  if r.status ~= HTTP_OK then return nil end
  return r.body.accounts
end

local function public_account(a)
  return { account_id = a.account_id, balance_cents = a.balance_cents, version = a.version, opened_at = a.opened_at }
end

-- ---------------------------------------------------------------------------------------------
-- Customers

-- The customer's address goes along: the users service limits failed attempts per address.
bus:add_route("/api/users", "POST", function(method, path, params, body, query, headers, peer)
  if type(body) ~= "table" then return bad("Send a username and a password.") end
  return relay(call("users", "POST", "/users", { username = body.username, password = body.password, client = peer }))
end)

bus:add_route("/api/sessions", "POST", function(method, path, params, body, query, headers, peer)
  if type(body) ~= "table" then return bad("Send a username and a password.") end
  return relay(call("users", "POST", "/sessions", { username = body.username, password = body.password, client = peer }, { retry = true }))
end)

-- Log-out: the token is refused from the answer on, by every instance.
bus:add_route("/api/sessions", "DELETE", function(method, path, params, body, query, headers)
  local user, claims = customer(headers)
  if not user then return unauthorized() end
  local r = call("users", "DELETE", "/sessions", { token = bearer(headers) }, { retry = true })
  if not r or r.status ~= HTTP_OK then return relay(r) end
  if not bus:wait(10000, function() return redis:exists("ended:" .. claims.jti) end) then
    return err(HTTP_GATEWAY_TIMEOUT, "timeout", "Logged out, but not everywhere yet; check again in a moment.")
  end
  return HTTP_NO_CONTENT
end)

-- Sessions ended by log-out (users' SessionEnded), kept until the token would have expired.
bus:add_event_listener("SessionEnded", function(event_type, key, correlation, data, meta)
  if type(data.token_id) ~= "string" or not data.token_id:match("^%x+$") or math.type(data.expires_at) ~= "integer" then return end
  local left = data.expires_at - os.time()
  if left <= 0 then return end
  redis:set("ended:" .. data.token_id, data.expires_at, { ttl_ms = left * 1000 })
end, { rebuild = true })

bus:add_route("/api/accounts", "GET", function(method, path, params, body, query, headers)
  local user = customer(headers)
  if not user then return unauthorized() end
  local ids = user_account_ids(user)
  if not ids then return unavailable() end
  if #ids == 0 then return HTTP_OK, json.array {} end
  local r = call("accounts", "GET", "/accounts", nil, { query = { owner = user, ids = table.concat(ids, ",") } })
  if not r or r.status ~= HTTP_OK then return unavailable() end
  local out = json.array {}
  for _, a in ipairs(r.body) do
    if a.owner == user then out[#out + 1] = public_account(a) end
  end
  return HTTP_OK, out
end)

bus:add_route("/api/accounts", "POST", function(method, path, params, body, query, headers)
  local user = customer(headers)
  if not user then return unauthorized() end
  local rid = request_id(user, headers, "open account")
  local r = call("accounts", "POST", "/accounts", { owner = user, request_id = rid }, { retry = true, timeout_ms = 15000 })
  if not r or r.status ~= HTTP_CREATED then return relay(r) end
  local account = r.body
  -- Read-your-writes: the account list (the users service's) shows it before we answer.
  local listed = call("users", "GET", "/users/" .. enc(user) .. "/accounts", nil,
    { query = { wait_for = account.account_id, timeout_ms = 10000 }, timeout_ms = 15000 })
  if not listed or listed.status ~= HTTP_OK then return relay(listed) end
  return HTTP_CREATED, public_account(account)
end)

bus:add_route("/api/accounts/{id}", "GET", function(method, path, params, body, query, headers)
  local user = customer(headers)
  if not user then return unauthorized() end
  local account, failed = own_account(user, params.id)
  if failed then return table.unpack(failed) end
  if not account then return not_found() end
  return HTTP_OK, public_account(account)
end)

bus:add_route("/api/accounts/{id}/statement", "GET", function(method, path, params, body, query, headers)
  local user = customer(headers)
  if not user then return unauthorized() end
  local r = call("accounts", "GET", "/accounts/" .. enc(params.id) .. "/statement", nil,
    { query = { owner = user, limit = query.limit, cursor = query.cursor } })
  -- The last page says so with `next_cursor: null` (a decoded null is nil in Lua).
  if r and r.status == HTTP_OK and type(r.body) == "table" and r.body.next_cursor == nil then r.body.next_cursor = json.null end
  return relay(r)
end)

local function money(params, body, headers, kind)
  local user = customer(headers)
  if not user then return unauthorized() end
  if type(body) ~= "table" then return bad("Send the amount in cents.") end
  if not is_amount(body.amount_cents) then return invalid_amount() end
  local rid = request_id(user, headers, kind .. " " .. params.id)
  local r = call("accounts", "POST", "/accounts/" .. enc(params.id) .. "/" .. kind,
    { amount_cents = body.amount_cents, owner = user, request_id = rid }, { retry = true, timeout_ms = 15000 })
  if r and r.status == HTTP_CREATED then
    return HTTP_CREATED, { account_id = r.body.account_id, balance_cents = r.body.balance_cents, version = r.body.version, entry = r.body.entry }
  end
  return relay(r)
end

bus:add_route("/api/accounts/{id}/deposits", "POST", function(method, path, params, body, query, headers)
  return money(params, body, headers, "deposits")
end)

bus:add_route("/api/accounts/{id}/withdrawals", "POST", function(method, path, params, body, query, headers)
  return money(params, body, headers, "withdrawals")
end)

bus:add_route("/api/transfers", "POST", function(method, path, params, body, query, headers)
  local user = customer(headers)
  if not user then return unauthorized() end
  if type(body) ~= "table" then return bad("Send from_account, to_account and amount_cents.") end
  if type(body.from_account) ~= "string" or body.from_account == "" then return bad("Choose the account to send from.", "invalid account") end
  if not is_account_id(body.to_account) then
    return bad("Enter the account number to send the money to (acc-...).", "invalid account")
  end
  if not is_amount(body.amount_cents) then return invalid_amount() end
  local mine, failed = owns(user, body.from_account)
  if failed then return table.unpack(failed) end
  if not mine then return not_found("You can only send money from your own accounts.") end
  local r = call("transfers", "POST", "/transfers", {
    from_account = body.from_account, to_account = body.to_account, amount_cents = body.amount_cents,
    requested_by = user, request_id = request_id(user, headers, "transfer"),
  }, { retry = true, timeout_ms = 15000 })
  if r and r.status == HTTP_ACCEPTED then
    return HTTP_ACCEPTED, { transfer_id = r.body.transfer_id, status = r.body.status }
  end
  return relay(r)
end)

local function public_transfer(t)
  return {
    transfer_id = t.transfer_id, status = t.status, reason = t.reason, from_account = t.from_account,
    to_account = t.to_account, amount_cents = t.amount_cents, created_at = t.created_at, updated_at = t.updated_at,
  }
end

bus:add_route("/api/transfers/{id}", "GET", function(method, path, params, body, query, headers)
  local user = customer(headers)
  if not user then return unauthorized() end
  local r = call("transfers", "GET", "/transfers/" .. enc(params.id))
  if not r then return unavailable() end
  if r.status ~= HTTP_OK then return not_found("No such transfer.") end
  local t = r.body
  if t.requested_by ~= user then
    -- Not sent by this customer: visible only if one of the two accounts is theirs.
    local ids = user_account_ids(user)
    if not ids then return unavailable() end
    local mine = false
    for _, id in ipairs(ids) do mine = mine or id == t.from_account or id == t.to_account end
    if not mine then return not_found("No such transfer.") end
  end
  return HTTP_OK, public_transfer(t)
end)

bus:add_route("/api/transfers", "GET", function(method, path, params, body, query, headers)
  local user = customer(headers)
  if not user then return unauthorized() end
  if not query.account or query.account == "" then return bad("Give the account: /api/transfers?account=<id>.") end
  local account, failed = own_account(user, query.account)
  if failed then return table.unpack(failed) end
  if not account then return not_found() end
  local r = call("transfers", "GET", "/transfers", nil, { query = { account = query.account } })
  if not r or r.status ~= HTTP_OK then return relay(r) end
  local out = json.array {}
  for _, t in ipairs(r.body) do out[#out + 1] = public_transfer(t) end
  return HTTP_OK, out
end)

-- Loyalty points, per account, from nectar. The bank runs without it until it is added (one
-- command, while the bank runs): then the answer says so (`available = false`) at once.
bus:add_route("/api/points", "GET", function(method, path, params, body, query, headers)
  local user = customer(headers)
  if not user then return unauthorized() end
  if http.instances("nectar") == 0 then
    return HTTP_OK, { available = false, accounts = json.array {}, detail = "Nectar rewards are not running." }
  end
  local ids = user_account_ids(user)
  if not ids then return unavailable() end
  local r = call("nectar", "GET", "/points", nil, { query = { accounts = table.concat(ids, ",") } })
  if not r or r.status ~= HTTP_OK then return relay(r) end
  local out = json.array {}
  for _, p in ipairs(r.body.accounts) do out[#out + 1] = { account_id = p.account_id, points = p.points, version = p.version } end
  return HTTP_OK, { available = true, accounts = out }
end)

-- Live updates: the socket listens to its user's topic (new accounts) and to each account.
bus:add_websocket("/api/live", function(path, params, query, headers)
  local user = customer(headers, query)
  if not user then return { close = 4401, reason = "invalid or expired token" } end
  local topics = { "user:" .. user }
  for _, id in ipairs(user_account_ids(user) or {}) do topics[#topics + 1] = id end
  -- The first message tells the client it is subscribed (the UI ignores unknown kinds).
  return { topics = topics, messages = { { kind = "hello", username = user } } }
end)

-- ---------------------------------------------------------------------------------------------
-- Live listeners: every bfaf instance sees every event of these types as it is stored.

local CREDIT_KIND = { deposit = "deposit", transfer = "transfer_in", refund = "transfer_refund", cashback = "cashback" }
local DEBIT_KIND = { withdrawal = "withdrawal", transfer = "transfer_out" }

-- The same entry as the accounts service's statement (same entry_id: the event's id).
local function statement_entry(event_type, data, meta)
  local credit = event_type == "AccountCredited"
  return {
    entry_id = meta.id, time = meta.time, version = meta.version,
    amount_cents = credit and data.amount_cents or -data.amount_cents,
    balance_cents = data.balance_cents,
    kind = (credit and CREDIT_KIND or DEBIT_KIND)[data.reason] or data.reason,
    transfer_id = data.transfer_id, counterparty = data.counterparty,
  }
end

-- Topics are pushed only from what they name: an account id for account topics, a user identity
-- for user topics (an event naming anything else, e.g. a transfer "to" user:<someone>, pushes
-- nothing there).
bus:add_live_listener("AccountOpened", function(event_type, key, correlation, data, meta)
  if not is_account_id(key) or not is_identity(data.owner) then return end
  local topic = "user:" .. data.owner
  bus:join(topic, key)
  bus:push(topic, { kind = "account", account_id = key, balance_cents = data.balance_cents or 0, version = meta.version })
end)

local function money_update(event_type, key, correlation, data, meta)
  if not is_account_id(key) then return end
  bus:push(key, { kind = "account", account_id = key, balance_cents = data.balance_cents, version = meta.version })
  bus:push(key, { kind = "statement_entry", account_id = key, entry = statement_entry(event_type, data, meta) })
end
-- `topics`: the listener pushes only to these (the event's key, fields of its data), so an
-- instance where no socket listens to them skips the call.
bus:add_live_listener("AccountCredited", money_update, { topics = { "key" } })
bus:add_live_listener("AccountDebited", money_update, { topics = { "key" } })

local function transfer_update(status)
  return function(event_type, key, correlation, data, meta)
    local topics = {}
    for _, account in ipairs({ data.from_account, data.to_account }) do
      if is_account_id(account) then topics[#topics + 1] = account end
    end
    if #topics == 0 then return end
    bus:push(topics, {
      kind = "transfer", transfer_id = data.transfer_id, status = status, reason = data.reason,
      from_account = data.from_account, to_account = data.to_account, amount_cents = data.amount_cents,
      updated_at = meta.time,
    })
  end
end
local TRANSFER_TOPICS = { topics = { "data.from_account", "data.to_account" } }
bus:add_live_listener("TransferRequested", transfer_update("pending"), TRANSFER_TOPICS)
bus:add_live_listener("TransferCompleted", transfer_update("completed"), TRANSFER_TOPICS)
bus:add_live_listener("TransferFailed", transfer_update("failed"), TRANSFER_TOPICS)

-- Nectar's points (once nectar runs): the account's new points balance.
local function points_update(event_type, key, correlation, data, meta)
  if not is_account_id(data.account_id) or key ~= "nectar-" .. data.account_id or math.type(data.points_balance) ~= "integer" then return end
  bus:push(data.account_id, { kind = "points", account_id = data.account_id, points = data.points_balance, version = meta.version })
end
bus:add_live_listener("NectarCredit", points_update, { topics = { "data.account_id" } })
bus:add_live_listener("NectarDebit", points_update, { topics = { "data.account_id" } })

-- ---------------------------------------------------------------------------------------------
-- Operators: the explorer is the platform's (superclient/platform/explorer.lua), not the bank's;
-- the bank only says where it is, for the UI's link.

bus:add_route("/api/explorer", "GET", function()
  local url = bus:env("SEQUENT_EXPLORER_URL")
  return HTTP_OK, { url = (url and url ~= "") and url or json.null }
end)
