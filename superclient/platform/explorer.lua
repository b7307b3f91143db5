-- The explorer: the platform's operators' console, for any deployment (not part of any
-- application). Serves the explorer's UI (ui/dist/explorer.html) and its JSON API under
-- /api/admin (openapi/explorer.json): live tail, browse, key history, causal trace, services
-- and lag, parked keys and their release, rebuilds with their progress.
--
-- Operators log in with the explorer's own credential (SEQUENT_ADMIN_USER, SEQUENT_ADMIN_PASSWORD)
-- and get a token only the explorer accepts. Event data is shown with every field that a
-- registered service declares `sensitive` hidden: the gateway's GET /v1/sensitive gives those
-- fields, read again for every answer, so a service registered a moment ago is covered too.
-- Run with --admin-api (superclient/README.md, "The explorer").
bus:register("explorer", {
  http = "public",
  mints_tokens = true, -- the operators' sessions
  env = { "SEQUENT_GATEWAY_URL", "SEQUENT_GATEWAY_TOKEN", "SEQUENT_UI_DIR", "SEQUENT_ADMIN_USER", "SEQUENT_ADMIN_PASSWORD" },
})

local GATEWAY = bus:env("SEQUENT_GATEWAY_URL") or "http://127.0.0.1:8081"
local SESSION_TTL = 8 * 3600

-- The explorer's pages (any path but the API opens explorer.html, which routes in the browser).
bus:serve_static("/", bus:env("SEQUENT_UI_DIR") or "../../ui/dist", { fallback = "explorer.html", exclude = { "/api/" } })
-- The API's OpenAPI 3.1 description (openapi/explorer.json).
bus:serve_static("/api/openapi", "openapi")

-- Errors are RFC 9457 problem details: the runtime's `problem(status, code, detail, extra)`.
local function unauthorized() return problem(HTTP_UNAUTHORIZED, "unauthorized", "Your session expired, please log in again.") end
local function unavailable(why) return problem(HTTP_SERVICE_UNAVAILABLE, "unavailable", why or "The gateway did not answer; try again.") end

local function enc(s) return (tostring(s):gsub("[^%w%-_~]", function(c) return string.format("%%%02X", string.byte(c)) end)) end

local function bearer(headers, query)
  local h = headers.authorization
  if h then return h:match("^[Bb]earer%s+(%S+)$") end
  return query and query.token
end

-- The operator, if the token is a session this explorer made.
local function operator(headers, query)
  local token = bearer(headers, query)
  if not token then return nil end
  local claims = crypto.verify_token(token, { issuer = "explorer" })
  if not claims or claims.role ~= "operator" then return nil end
  return claims.sub
end

-- A call to the gateway's API as the explorer: (status, body), or nil and why.
local function gateway_get(path, query)
  local token = bus:env("SEQUENT_GATEWAY_TOKEN")
  local r, e = http.request { url = GATEWAY .. path, query = query, timeout_ms = 15000,
    headers = token and { authorization = "Bearer " .. token } or nil }
  if not r then
    log:warn("explorer: the gateway did not answer: " .. e)
    return nil
  end
  return r
end

-- What no operator sees: every registered declaration's sensitive fields (nil when unknown).
local function sensitive()
  local r = gateway_get("/v1/sensitive")
  if not r or r.status ~= HTTP_OK or type(r.body) ~= "table" or type(r.body.sensitive) ~= "table" then return nil end
  return r.body.sensitive
end

-- A gateway query of events, passed on with the sensitive fields hidden; never unredacted.
local function events(path, query)
  local rules = sensitive()
  if not rules then return unavailable("The gateway did not say which fields are sensitive; try again.") end
  local r = gateway_get(path, query)
  if not r then return unavailable() end
  -- The explorer's own token refused is not the operator's session ending.
  if r.status == HTTP_UNAUTHORIZED or r.status == HTTP_FORBIDDEN then
    log:error("explorer: the gateway refused SEQUENT_GATEWAY_TOKEN (" .. r.status .. ")")
    return unavailable("The gateway refused the explorer's own token; tell whoever runs it.")
  end
  if r.status >= 400 then
    local b = type(r.body) == "table" and r.body or {}
    return problem(r.status, b.code or "error", b.detail or "The gateway refused the query.")
  end
  if r.status ~= HTTP_OK or type(r.body) ~= "table" then return unavailable() end
  local out = { events = json.array(admin.redact(r.body.events or {}, rules)) }
  out.next_from_seq = r.body.next_from_seq
  if out.next_from_seq == nil then out.next_from_seq = json.null end
  return HTTP_OK, out
end

bus:add_route("/api/admin/sessions", "POST", function(method, path, params, body)
  local user, password = bus:env("SEQUENT_ADMIN_USER") or "admin", bus:env("SEQUENT_ADMIN_PASSWORD")
  if type(body) ~= "table" or type(body.username) ~= "string" or type(body.password) ~= "string" then
    return problem(HTTP_BAD_REQUEST, "invalid request", "Send a username and a password.")
  end
  if not password or password == "" then
    return problem(HTTP_UNAUTHORIZED, "invalid credentials", "Operator log-in is off: set SEQUENT_ADMIN_PASSWORD for the explorer.")
  end
  -- Compare digests, so the time taken does not depend on where the strings differ.
  local same = crypto.sha256_hex(body.username) == crypto.sha256_hex(user)
  same = (crypto.sha256_hex(body.password) == crypto.sha256_hex(password)) and same
  if not same then return problem(HTTP_UNAUTHORIZED, "invalid credentials", "Wrong username or password.") end
  return HTTP_OK, {
    token = crypto.token("operator:" .. user, SESSION_TTL, { role = "operator" }),
    username = user,
    expires_at = os.date("!%Y-%m-%dT%H:%M:%SZ", os.time() + SESSION_TTL),
  }
end)

local function route(path, method, f)
  bus:add_route(path, method, function(m, p, params, body, query, headers)
    if not operator(headers) then return unauthorized() end
    return f(params, body, query)
  end)
end

route("/api/admin/events", "GET", function(params, body, query)
  return events("/v1/events", {
    type = query.type ~= "" and query.type or nil, key = query.key ~= "" and query.key or nil,
    from_seq = query.from_seq, limit = query.limit or "50",
  })
end)

route("/api/admin/keys/{key}/events", "GET", function(params, body, query)
  return events("/v1/keys/" .. enc(params.key) .. "/events", { from_seq = query.from_seq, limit = query.limit or "1000" })
end)

route("/api/admin/correlations/{id}/events", "GET", function(params)
  return events("/v1/correlations/" .. enc(params.id) .. "/events", nil)
end)

-- A rebuild's record as the API shows it.
local function rebuild_view(service, r)
  return {
    service = service, status = r.status, done = r.done or 0, expected = r.expected or 0,
    requested_at = r.requested_at, finished_at = r.finished_at, instance = r.instance, error = r.error,
  }
end

route("/api/admin/services", "GET", function()
  local out = json.array {}
  for _, s in ipairs(admin.services()) do
    local instances = json.array {}
    for _, i in ipairs(s.instances) do
      instances[#instances + 1] = { instance = i.instance, partitions = json.array(i.partitions), last_seen = i.last_seen, live = i.live }
    end
    local r = admin.rebuild_status(s.service)
    out[#out + 1] = { service = s.service, instances = instances, consumer_lag = s.consumer_lag or 0, rebuild = r and rebuild_view(s.service, r) or json.null }
  end
  return HTTP_OK, out
end)

route("/api/admin/parked", "GET", function()
  local out = json.array {}
  for _, p in ipairs(admin.parked()) do out[#out + 1] = p end
  return HTTP_OK, out
end)

route("/api/admin/parked/{service}/{key}/release", "POST", function(params)
  if not admin.release(params.service, params.key) then
    return problem(HTTP_NOT_FOUND, "not found", params.key .. " is not parked in " .. params.service .. ".")
  end
  return HTTP_ACCEPTED, { service = params.service, key = params.key, status = "release requested" }
end)

-- A rebuild of a service's state from the stream, run by one of its instances; its progress
-- is polled with GET.
route("/api/admin/services/{service}/rebuild", "POST", function(params)
  -- A service that consumes no events (consumer lag nil) has no state built from the stream.
  for _, s in ipairs(admin.services()) do
    if s.service == params.service and s.consumer_lag == nil then
      return problem(HTTP_NOT_FOUND, "not found", params.service .. " handles no events: there is nothing to rebuild.")
    end
  end
  local ok, why = admin.rebuild(params.service)
  if why == "unknown" then
    return problem(HTTP_NOT_FOUND, "not found", params.service .. " has no state to rebuild (no instance of it ever ran).")
  elseif why == "busy" then
    return problem(HTTP_CONFLICT, "conflict", "A rebuild of " .. params.service .. " is requested or running already.")
  end
  return HTTP_ACCEPTED, rebuild_view(params.service, admin.rebuild_status(params.service) or { status = "requested" })
end)

route("/api/admin/services/{service}/rebuild", "GET", function(params)
  local r = admin.rebuild_status(params.service)
  if not r then return problem(HTTP_NOT_FOUND, "not found", "No rebuild of " .. params.service .. " was requested.") end
  return HTTP_OK, rebuild_view(params.service, r)
end)

bus:add_websocket("/api/admin/live", function(path, params, query, headers)
  if not operator(headers, query) then return { close = 4401, reason = "invalid or expired token" } end
  local rules = sensitive()
  if not rules then return { close = 1013, reason = "the gateway did not say which fields are sensitive; reconnect" } end
  return {
    events = { types = query.types or "", keys = query.keys or "", from_seq = tonumber(query.from_seq or "") },
    redact = rules,
  }
end)
