-- accounts: bank accounts, their balances and statements, and the money moves of transfers.
--
-- Every event of an account key (acc-...) carries the balance after it (`balance_cents`), so
-- the account's state at version v is the data of its event v: a decision to move money reads
-- the key's last event from the stream (bus:last_event, the authority, never a projection that
-- may lag) and is appended with `expect = that version + 1`. If anything was appended to the key
-- meanwhile, the store refuses it (conflict) and the decision is taken again on the new state:
-- two debits can never both pass on the same balance, and a balance never goes below zero.
-- See services/README.md.
-- The declaration: what the platform derives this service's rights from (superclient/README.md).
bus:register("accounts", {
  appends = { "AccountOpened", "AccountCredited", "AccountDebited", "TransferFailed" },
})

local MAX_BALANCE = 100000000000 -- cents ($1,000,000,000.00): no balance grows past it
local ACCOUNT_ID = "^acc%-[0-9a-f]+$"
local REQUEST_ID = "^[0-9A-Za-z_-]+$"

local function is_account_id(s) return type(s) == "string" and #s <= 64 and s:match(ACCOUNT_ID) ~= nil end
local function is_amount(x) return math.type(x) == "integer" and x > 0 and x <= MAX_BALANCE end
local function valid_owner(owner) return type(owner) == "string" and owner ~= "" and #owner <= 64 end
-- The user an account was opened for: its first event (AccountOpened) in the stream. A key's
-- first event never changes, so what was read is kept (per Lua state, at most OWNERS_KEPT
-- accounts): one stream read fewer for most transfers.
local OWNERS_KEPT = 10000
local owners, owners_kept = {}, 0
local function opened_by(account)
  local owner = owners[account]
  if owner then return owner end
  local first = bus:events_after(account, 0, 1)[1]
  owner = first and first.type == "AccountOpened" and first.data.owner or nil
  if owner then
    if owners_kept >= OWNERS_KEPT then owners, owners_kept = {}, 0 end
    owners[account], owners_kept = owner, owners_kept + 1
  end
  return owner
end

-- Errors are RFC 9457 problem details: the runtime's `problem(status, code, detail, extra)`.
local function bad(message, error_code) return problem(HTTP_BAD_REQUEST, error_code or "invalid request", message) end
local function not_found() return problem(HTTP_NOT_FOUND, "not found", "That account does not exist.") end

-- ---------------------------------------------------------------------------------------------
-- Projection (Redis): account:<id> {account_id, owner, balance_cents, version, opened_at};
-- stmt:<id> the statement, oldest first, entry n = the event of version n; ops:<id> request id
-- -> version (idempotent deposits and withdrawals); owner:<user> account id -> stream seq.

local CREDIT_KIND = { deposit = "deposit", transfer = "transfer_in", refund = "transfer_refund", cashback = "cashback" }
local DEBIT_KIND = { withdrawal = "withdrawal", transfer = "transfer_out" }

local function statement_entry(event_type, data, meta)
  local credit = event_type == "AccountCredited"
  return {
    entry_id = meta.id,
    time = meta.time,
    version = meta.version,
    amount_cents = credit and data.amount_cents or -data.amount_cents,
    balance_cents = data.balance_cents,
    kind = (credit and CREDIT_KIND or DEBIT_KIND)[data.reason] or data.reason,
    transfer_id = data.transfer_id,
    counterparty = data.counterparty,
  }
end

bus:add_event_listener("AccountOpened", function(event_type, key, correlation, data, meta)
  redis:set("account:" .. key, {
    account_id = key, owner = data.owner, balance_cents = data.balance_cents or 0,
    version = meta.version, opened_at = meta.time,
  })
  redis:hset("owner:" .. data.owner, key, meta.seq)
end, { rebuild = true })

-- Applies a money event to the projection, checking that it continues the account's chain.
local function apply_money(event_type, key, data, meta)
  local account = redis:get("account:" .. key)
  if not account then error(event_type .. " " .. meta.id .. " for " .. key .. ", which was never opened") end
  local sign = event_type == "AccountCredited" and 1 or -1
  if meta.version ~= account.version + 1 or account.balance_cents + sign * data.amount_cents ~= data.balance_cents then
    error(string.format("%s %s does not continue %s (version %d, balance %d): version %d, %+d -> %d",
      event_type, meta.id, key, account.version, account.balance_cents, meta.version, sign * data.amount_cents, data.balance_cents))
  end
  account.balance_cents = data.balance_cents
  account.version = meta.version
  redis:set("account:" .. key, account)
  redis:rpush("stmt:" .. key, statement_entry(event_type, data, meta))
  if data.request_id then redis:hset("ops:" .. key, data.request_id, meta.version) end
end

-- Has this transfer already left an event of `event_type` (and `reason`) on `key` after stream
-- position `seq`? (A handler run again must not decide twice.) Only asked when the superclient
-- says the event may have been handled before (`meta.redelivered`): one read of the stream.
local function already(key, seq, event_type, transfer_id, reason)
  for _, e in ipairs(bus:events_after(key, seq)) do
    if e.type == event_type and e.data.transfer_id == transfer_id and (reason == nil or e.data.reason == reason) then
      return true
    end
  end
  return false
end

-- ---------------------------------------------------------------------------------------------
-- The transfer saga's money moves (the transfers service records the outcome).

-- 1. Requested: debit the source, or reject the transfer with a reason (an event, not an error).
bus:add_event_listener("TransferRequested", function(event_type, key, correlation, data, meta)
  local id, from, to, amount = data.transfer_id, data.from_account, data.to_account, data.amount_cents
  if meta.redelivered then
    if already(key, meta.seq, "TransferFailed", id) then return end
    if is_account_id(from) and already(from, meta.seq, "AccountDebited", id) then return end
  end
  local function fail(reason)
    bus:send("TransferFailed", key, 1, correlation, {
      transfer_id = id, from_account = from, to_account = to, amount_cents = amount, reason = reason,
    })
  end
  if not is_amount(amount) then return fail("invalid amount") end
  if from == to then return fail("same account") end
  -- Only the owner may send from an account (the transfers route is reachable from the host
  -- too): a source that is not the requester's is as unknown as one that does not exist. The
  -- owner is read from the account's first event in the stream (owners never change), not
  -- from this service's state: a handler that sends locks what it read from its state until
  -- the send is stored, so every transfer of one customer would wait for the others
  -- (measured: the bank completed 4 transfers/s offered 300/s).
  if not is_account_id(from) or not valid_owner(data.requested_by) or opened_by(from) ~= data.requested_by then
    return fail("unknown account")
  end
  -- The destination only has to exist here (its balance is read when it is credited): its
  -- kept opener answers without a stream read for most transfers.
  if not is_account_id(to) or not opened_by(to) then return fail("unknown account") end
  local source = bus:last_event(from)
  if not source then return fail("unknown account") end
  local balance = source.data.balance_cents
  if balance < amount then return fail("insufficient funds") end
  -- Conflict (the source moved since we read it): nothing is stored and, because of
  -- rerun_on_conflict, this handler runs again at once on the new state.
  bus:send("AccountDebited", from, source.version + 1, correlation, {
    account_id = from, amount_cents = amount, balance_cents = balance - amount,
    transfer_id = id, counterparty = to, reason = "transfer",
  })
end, { rerun_on_conflict = true })

-- 2. Source debited: credit the destination, or give the money back (the debit reversed).
local function credit_or_refund(key, correlation, data, meta)
  local id, to, amount = data.transfer_id, data.counterparty, data.amount_cents
  if meta.redelivered then
    if already(to, meta.seq, "AccountCredited", id, "transfer") then return end
    if already(key, meta.seq, "AccountCredited", id, "refund") then return end
  end
  local destination = is_account_id(to) and bus:last_event(to)
  if destination and destination.data.balance_cents + amount <= MAX_BALANCE then
    bus:send("AccountCredited", to, destination.version + 1, correlation, {
      account_id = to, amount_cents = amount, balance_cents = destination.data.balance_cents + amount,
      transfer_id = id, counterparty = key, reason = "transfer",
    })
  else
    local source = bus:last_event(key)
    bus:send("AccountCredited", key, source.version + 1, correlation, {
      account_id = key, amount_cents = amount, balance_cents = source.data.balance_cents + amount,
      transfer_id = id, counterparty = to, reason = "refund",
      failure = destination and "balance limit exceeded" or "unknown account",
    })
  end
end

bus:add_event_listener("AccountDebited", function(event_type, key, correlation, data, meta)
  apply_money(event_type, key, data, meta)
  if data.reason == "transfer" and not meta.rebuild then credit_or_refund(key, correlation, data, meta) end
end, { rebuild = true, rerun_on_conflict = true })

bus:add_event_listener("AccountCredited", function(event_type, key, correlation, data, meta)
  apply_money(event_type, key, data, meta)
end, { rebuild = true })

-- ---------------------------------------------------------------------------------------------
-- Routes (called by the bfaf, which authenticates the customer and passes `owner`).

local function account_view(a)
  return { account_id = a.account_id, owner = a.owner, balance_cents = a.balance_cents, version = a.version, opened_at = a.opened_at }
end

-- Every operation on an account names its owner (the bfaf passes the customer it
-- authenticated) and is checked against it: anything on the host can call these routes, so none
-- of them trusts an account id alone.
local function owner_required() return bad("owner (the user name the account belongs to) is required") end

-- The account, if it exists and belongs to `owner`.
local function owned(id, owner)
  if not is_account_id(id) or not valid_owner(owner) then return nil end
  local a = redis:get("account:" .. id)
  if not a or a.owner ~= owner then return nil end
  return a
end

local function projected(id, version)
  return function()
    local a = redis:get("account:" .. id)
    return a ~= nil and a.version >= version
  end
end

bus:add_route("/accounts", "POST", function(method, path, params, body)
  if type(body) ~= "table" or type(body.owner) ~= "string" or body.owner == "" then
    return bad("owner (the user name) is required")
  end
  local rid = body.request_id
  if rid ~= nil and (type(rid) ~= "string" or #rid > 80 or not rid:match(REQUEST_ID)) then return bad("request_id is malformed") end
  for attempt = 1, 5 do
    local id = "acc-" .. (rid and crypto.sha256_hex("account\0" .. rid):sub(1, 16) or crypto.random_hex(8))
    local receipt = bus:send("AccountOpened", id, "new", nil, { account_id = id, owner = body.owner, balance_cents = 0 })
    if receipt.status == "ok" or rid then
      -- A retried request (same request id) finds its account already opened.
      if not bus:wait(10000, projected(id, 0)) then
        return problem(HTTP_GATEWAY_TIMEOUT, "timeout", "The account is being opened; check your accounts in a moment.")
      end
      local a = redis:get("account:" .. id)
      if a.owner ~= body.owner then return problem(HTTP_CONFLICT, "conflict", "That request id was used for another account.") end
      return HTTP_CREATED, account_view(a)
    end
  end
  return problem(HTTP_SERVICE_UNAVAILABLE, "unavailable", "Could not pick a free account id; try again.")
end)

-- The owner's accounts (all, oldest first; or those of `ids` that are theirs).
bus:add_route("/accounts", "GET", function(method, path, params, body, query)
  if not valid_owner(query.owner) then return owner_required() end
  local ids = {}
  if query.ids then
    for id in query.ids:gmatch("[^,]+") do ids[#ids + 1] = id end
  else
    local seqs = redis:hgetall("owner:" .. query.owner)
    for id in pairs(seqs) do ids[#ids + 1] = id end
    table.sort(ids, function(a, b) return seqs[a] < seqs[b] end)
  end
  local out = json.array {}
  for _, id in ipairs(ids) do
    local a = owned(id, query.owner)
    if a then out[#out + 1] = account_view(a) end
  end
  return HTTP_OK, out
end)

bus:add_route("/accounts/{id}", "GET", function(method, path, params, body, query)
  if not valid_owner(query.owner) then return owner_required() end
  local a = owned(params.id, query.owner)
  if not a then return not_found() end
  return HTTP_OK, account_view(a)
end)

-- Newest first, `limit` entries; `cursor` (opaque) continues with older entries.
bus:add_route("/accounts/{id}/statement", "GET", function(method, path, params, body, query)
  if not valid_owner(query.owner) then return owner_required() end
  local a = owned(params.id, query.owner)
  if not a then return not_found() end
  local limit = tonumber(query.limit or "50")
  if not limit or limit ~= math.floor(limit) or limit < 1 or limit > 500 then return bad("limit must be a whole number from 1 to 500") end
  local total = redis:llen("stmt:" .. params.id)
  local last = total
  if query.cursor and query.cursor ~= "" then
    last = tonumber(query.cursor)
    if not last or last ~= math.floor(last) or last < 0 or last > total then return bad("cursor is not one this service gave") end
  end
  local first = math.max(1, last - limit + 1)
  local entries = json.array {}
  if last >= 1 then
    local page = redis:lrange("stmt:" .. params.id, first - 1, last - 1)
    for i = #page, 1, -1 do entries[#entries + 1] = page[i] end
  end
  return HTTP_OK, { account_id = params.id, entries = entries, next_cursor = first > 1 and tostring(first - 1) or json.null }
end)

-- The answer to a deposit or withdrawal: the state right after it (its statement entry).
local function applied(id, version)
  local entry = redis:lrange("stmt:" .. id, version - 1, version - 1)[1]
  return HTTP_CREATED, { account_id = id, balance_cents = entry.balance_cents, version = version, entry = entry }
end

local function move_money(params, body, credit)
  if type(body) ~= "table" then return bad("send {\"amount_cents\": <whole number of cents>}") end
  local amount = body.amount_cents
  if not is_amount(amount) then
    return bad("The amount must be a whole number of cents, more than 0 and at most " .. MAX_BALANCE .. ".", "invalid amount")
  end
  local id = params.id
  if not valid_owner(body.owner) then return owner_required() end
  if not owned(id, body.owner) then return not_found() end
  local rid = body.request_id or crypto.random_hex(16)
  if type(rid) ~= "string" or #rid > 80 or not rid:match(REQUEST_ID) then return bad("request_id is malformed") end
  for attempt = 1, 50 do
    local head = bus:last_event(id)
    -- Let the projection reach the head, so the record of requests already applied is complete.
    if not bus:wait(10000, projected(id, head.version)) then
      return problem(HTTP_GATEWAY_TIMEOUT, "timeout", "The account is busy; check the balance before trying again.")
    end
    local done = redis:hget("ops:" .. id, rid)
    if done then return applied(id, done) end
    local balance = head.data.balance_cents
    local new_balance
    if credit then
      new_balance = balance + amount
      if new_balance > MAX_BALANCE then
        return problem(HTTP_UNPROCESSABLE_ENTITY, "balance limit exceeded", "This deposit would take the balance over the limit.", { balance_cents = balance })
      end
    else
      if balance < amount then
        return problem(HTTP_UNPROCESSABLE_ENTITY, "insufficient funds", "Not enough money in this account.", { balance_cents = balance })
      end
      new_balance = balance - amount
    end
    local receipt = bus:send(credit and "AccountCredited" or "AccountDebited", id, head.version + 1, nil, {
      account_id = id, amount_cents = amount, balance_cents = new_balance,
      reason = credit and "deposit" or "withdrawal", request_id = rid,
    }, { id = (credit and "dep-" or "wd-") .. rid })
    if receipt.status == "ok" then
      if not bus:wait(10000, projected(id, receipt.version)) then
        return problem(HTTP_GATEWAY_TIMEOUT, "timeout", "Accepted, but not applied yet; check the balance before trying again.")
      end
      return applied(id, receipt.version)
    elseif receipt.status ~= "conflict" then
      error("unexpected receipt " .. json.encode(receipt))
    end
    -- conflict: someone moved the account since we read it; decide again on the new state.
  end
  return problem(HTTP_SERVICE_UNAVAILABLE, "busy", "The account is too busy right now; try again.")
end

bus:add_route("/accounts/{id}/deposits", "POST", function(method, path, params, body)
  return move_money(params, body, true)
end)

bus:add_route("/accounts/{id}/withdrawals", "POST", function(method, path, params, body)
  return move_money(params, body, false)
end)
