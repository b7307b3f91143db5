-- nectar: loyalty points, the talk's proof of extensibility, added without changing any other
-- service. On every completed transfer, the sender's loyalty account nectar-<account id>:
--   * earns 10% of the amount as points when the amount is over $100 (10000 cents);
--   * when the amount is over $25 (2500 cents) and the points before this transfer suffice
--     (points >= amount), spends `amount` points for a cashback of 10% of the amount, credited
--     to the sending account (AccountCredited, reason "cashback"). "Before" is when nectar
--     handles the transfer: an account's transfers are keyed by transfer and so spread over
--     partitions, and while one partition lags a later transfer can be handled first.
-- Points are integers (1 point per cent of the amount spent); cashback is integer cents,
-- rounded down.
--
-- The points of an account are the `points_balance` of the last event of its nectar key, and
-- every append expects that key's (and the bank account's) next version: the decision is
-- taken on the current state, re-taken when it moved (rerun_on_conflict), and cannot be taken
-- twice for one transfer. Points, the cashback credit and the points spent are one atomic
-- batch.
--
-- Deployed into a running bank, the superclient first builds nectar's state from the stream
-- (its rebuild handlers only fold nectar's own events; transfers completed before nectar
-- existed earn nothing), so adding it changes nothing that happened before.
-- The declaration: what the platform derives this service's rights from (superclient/README.md).
-- Its state is partitioned (superclient/README.md, "Redis Cluster"): an account's points sit in
-- the slot of its nectar key's partition, so on a Redis Cluster nectar's partitions spread over
-- the shards. Each key carries its nectar key as hash tag: `points:{nectar-<account id>}`.
bus:register("nectar", {
  appends = { "NectarCredit", "NectarDebit", "AccountCredited" },
  state = "partitioned",
})

local EARN_OVER, EARN_PERCENT = 10000, 10
local USE_OVER, CASHBACK_PERCENT = 2500, 10
local MAX_BALANCE = 100000000000

local function is_account_id(s) return type(s) == "string" and #s <= 64 and s:match("^acc%-[0-9a-f]+$") ~= nil end

-- Projection: points:{nectar-<account id>} {account_id, points, version}.
local function points_key(account) return "points:{nectar-" .. account .. "}" end
local function apply_points(event_type, key, correlation, data, meta)
  redis:set(points_key(data.account_id), { account_id = data.account_id, points = data.points_balance, version = meta.version })
end
bus:add_event_listener("NectarCredit", apply_points, { rebuild = true })
bus:add_event_listener("NectarDebit", apply_points, { rebuild = true })

bus:add_event_listener("TransferCompleted", function(event_type, key, correlation, data, meta)
  local account, amount, transfer = data.from_account, data.amount_cents, data.transfer_id
  if not is_account_id(account) or math.type(amount) ~= "integer" or amount <= 0 then return end
  local nectar_key = "nectar-" .. account
  -- Already rewarded (run before, and its batch stored)? Only possible when redelivered.
  if meta.redelivered then
    for _, e in ipairs(bus:events_after(nectar_key, meta.seq)) do
      if e.data.transfer_id == transfer then return end
    end
  end
  local head = bus:last_event(nectar_key)
  local points = head and head.data.points_balance or 0
  local version = head and head.version + 1 or 0
  local earned = amount > EARN_OVER and amount * EARN_PERCENT // 100 or 0
  if earned > 0 then
    bus:send("NectarCredit", nectar_key, version, correlation, {
      account_id = account, transfer_id = transfer, points = earned, points_balance = points + earned,
    })
    version = version + 1
  end
  if amount > USE_OVER and points >= amount then
    local bank = bus:last_event(account)
    local cashback = amount * CASHBACK_PERCENT // 100
    if bank and cashback > 0 and bank.data.balance_cents + cashback <= MAX_BALANCE then
      bus:send("NectarDebit", nectar_key, version, correlation, {
        account_id = account, transfer_id = transfer, points = amount, points_balance = points + earned - amount,
      })
      bus:send("AccountCredited", account, bank.version + 1, correlation, {
        account_id = account, amount_cents = cashback, balance_cents = bank.data.balance_cents + cashback,
        transfer_id = transfer, reason = "cashback",
      })
    end
  end
end, { rerun_on_conflict = true })

bus:add_route("/points/{account}", "GET", function(method, path, params)
  if not is_account_id(params.account) then return problem(HTTP_BAD_REQUEST, "invalid account", "Not an account id: " .. params.account) end
  local p = redis:get(points_key(params.account))
  return HTTP_OK, { account_id = params.account, points = p and p.points or 0 }
end)

-- The points of several accounts (?accounts=a,b,...; the bfaf asks for a customer's accounts at
-- once): each with the version of its nectar key (none before its first event), so that a
-- reader can tell a newer value (e.g. a live update) from an older one.
local MAX_ACCOUNTS = 100
bus:add_route("/points", "GET", function(method, path, params, body, query)
  local out = json.array {}
  for id in (query.accounts or ""):gmatch("[^,]+") do
    if not is_account_id(id) then return problem(HTTP_BAD_REQUEST, "invalid account", "Not an account id: " .. id) end
    if #out == MAX_ACCOUNTS then return problem(HTTP_BAD_REQUEST, "invalid request", "At most " .. MAX_ACCOUNTS .. " accounts.") end
    local p = redis:get(points_key(id))
    out[#out + 1] = { account_id = id, points = p and p.points or 0, version = p and p.version }
  end
  return HTTP_OK, { accounts = out }
end)
