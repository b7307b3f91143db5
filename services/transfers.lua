-- transfers: the money-transfer saga.
--
--   TransferRequested (tr-<id>, here)                          correlation = the transfer id
--     -> AccountDebited on the source (accounts)               or TransferFailed (accounts):
--                                                               same account, unknown account,
--                                                               insufficient funds
--     -> AccountCredited on the destination (accounts)         or, when the credit is refused,
--                                                               AccountCredited back on the
--                                                               source, reason "refund" (accounts)
--     -> TransferCompleted (here)                              or TransferFailed (here)
--
-- Each step is caused by the previous one (the superclient sets correlation and causation), so
-- the transfer's events form one causal chain. Every terminal event is appended with expect 1
-- on the transfer's key: a transfer ends exactly once.
-- The declaration: what the platform derives this service's rights from (superclient/README.md).
bus:register("transfers", {
  appends = { "TransferRequested", "TransferCompleted", "TransferFailed" },
})

local MAX_AMOUNT = 100000000000

-- Errors are RFC 9457 problem details: the runtime's `problem(status, code, detail, extra)`.
local function bad(message, code) return problem(HTTP_BAD_REQUEST, code or "invalid request", message) end
local function is_amount(x) return math.type(x) == "integer" and x > 0 and x <= MAX_AMOUNT end
local function is_ref(s) return type(s) == "string" and #s >= 1 and #s <= 128 and not s:find("[%s%c]") end
-- Money moves between accounts only: both ends are account ids (never `user:<name>`, a topic
-- of the bfaf's live feed, or anything else a listener might act on).
local function is_account_id(s) return type(s) == "string" and #s <= 64 and s:match("^acc%-[0-9a-f]+$") ~= nil end

-- Projection: transfer:<id> {transfer_id, from_account, to_account, amount_cents, status,
-- reason?, created_at, updated_at, requested_by}; by-account:<account> transfer id -> seq.
bus:add_event_listener("TransferRequested", function(event_type, key, correlation, data, meta)
  redis:set("transfer:" .. key, {
    transfer_id = data.transfer_id, from_account = data.from_account, to_account = data.to_account,
    amount_cents = data.amount_cents, status = "pending", requested_by = data.requested_by,
    created_at = meta.time, updated_at = meta.time,
  })
  for _, account in ipairs({ data.from_account, data.to_account }) do
    if is_account_id(account) then redis:hset("by-account:" .. account, key, meta.seq) end
  end
end, { rebuild = true })

local function finished(status)
  return function(event_type, key, correlation, data, meta)
    local t = redis:get("transfer:" .. key)
    if not t then error(event_type .. " for " .. key .. ", which was never requested") end
    t.status = status
    t.reason = data.reason
    t.updated_at = meta.time
    redis:set("transfer:" .. key, t)
  end
end
bus:add_event_listener("TransferCompleted", finished("completed"), { rebuild = true })
bus:add_event_listener("TransferFailed", finished("failed"), { rebuild = true })

-- The destination was credited (completed) or the debit was reversed (failed). Both terminal
-- events expect version 1 of the transfer's key, so a transfer ends once. A redelivered
-- handler sends the same event id again, which the gateway answers as stored; a conflict
-- would mean another event ended the transfer first, and the runtime logs it as a warning
-- (no receipt listener: a listener would cost a Lua call per transfer for nothing to do).
bus:add_event_listener("AccountCredited", function(event_type, key, correlation, data, meta)
  if not data.transfer_id then return end
  if data.reason == "transfer" then
    bus:send("TransferCompleted", data.transfer_id, 1, correlation, {
      transfer_id = data.transfer_id, from_account = data.counterparty, to_account = data.account_id,
      amount_cents = data.amount_cents,
    })
  elseif data.reason == "refund" then
    bus:send("TransferFailed", data.transfer_id, 1, correlation, {
      transfer_id = data.transfer_id, from_account = data.account_id, to_account = data.counterparty,
      amount_cents = data.amount_cents, reason = data.failure or "credit refused",
    })
  end
end)

local function view(t)
  return {
    transfer_id = t.transfer_id, status = t.status, reason = t.reason, from_account = t.from_account,
    to_account = t.to_account, amount_cents = t.amount_cents, created_at = t.created_at,
    updated_at = t.updated_at, requested_by = t.requested_by,
  }
end

-- Starts a transfer; answers 202 once it is recorded (status pending). The saga runs on.
bus:add_route("/transfers", "POST", function(method, path, params, body)
  if type(body) ~= "table" then return bad("send {from_account, to_account, amount_cents}") end
  if not is_account_id(body.from_account) then return bad("from_account must be an account id (acc-...)", "invalid account") end
  if not is_account_id(body.to_account) then return bad("Enter the account number to send the money to (acc-...).", "invalid account") end
  if type(body.requested_by) ~= "string" or body.requested_by == "" or #body.requested_by > 64 then
    return bad("requested_by (the owner of from_account) is required")
  end
  if not is_amount(body.amount_cents) then
    return bad("The amount must be a whole number of cents, more than 0 and at most " .. MAX_AMOUNT .. ".", "invalid amount")
  end
  local rid = body.request_id
  if rid ~= nil and (type(rid) ~= "string" or #rid > 80 or not rid:match("^[0-9A-Za-z_-]+$")) then return bad("request_id is malformed") end
  local id = "tr-" .. (rid and crypto.sha256_hex("transfer\0" .. rid):sub(1, 32) or crypto.uuid():gsub("-", ""))
  local receipt = bus:send("TransferRequested", id, "new", id, {
    transfer_id = id, from_account = body.from_account, to_account = body.to_account,
    amount_cents = body.amount_cents, requested_by = body.requested_by,
  })
  if receipt.status ~= "ok" and not rid then error("a fresh transfer id conflicted: " .. json.encode(receipt)) end
  local t
  if not bus:wait(10000, function() t = redis:get("transfer:" .. id); return t ~= nil end) then
    return problem(HTTP_GATEWAY_TIMEOUT, "timeout", "The transfer was sent; check its status in a moment.", { transfer_id = id })
  end
  if t.from_account ~= body.from_account or t.to_account ~= body.to_account or t.amount_cents ~= body.amount_cents then
    return problem(HTTP_CONFLICT, "conflict", "That request id was used for another transfer.")
  end
  return HTTP_ACCEPTED, view(t)
end)

bus:add_route("/transfers/{id}", "GET", function(method, path, params)
  local t = is_ref(params.id) and redis:get("transfer:" .. params.id)
  if not t then return problem(HTTP_NOT_FOUND, "not found", "No such transfer.") end
  return HTTP_OK, view(t)
end)

-- The transfers from or to an account, newest first.
bus:add_route("/transfers", "GET", function(method, path, params, body, query)
  if not is_ref(query.account) then return bad("give account=<account id>") end
  local seqs = redis:hgetall("by-account:" .. query.account)
  local ids = {}
  for id in pairs(seqs) do ids[#ids + 1] = id end
  table.sort(ids, function(a, b) return seqs[a] > seqs[b] end)
  local out = json.array {}
  for _, id in ipairs(ids) do
    local t = redis:get("transfer:" .. id)
    if t then out[#out + 1] = view(t) end
  end
  return HTTP_OK, out
end)
