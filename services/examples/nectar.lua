-- Nectar loyalty points: the service the original talk added "without touching the others"
-- (reference/seed-slides.txt, "Introducing the Nectar Service"), ported to Sequent.
--
-- If you spend over £100 you receive a percentage of your spend as nectar points; if you spend
-- over £25 and have enough points, you receive cashback.
--
-- Changes from the slides, all small:
--   * money is integer minor units (pence) everywhere, so the thresholds are 10000 and 2500
--     and percentages are computed with integer division (the slides used floats);
--   * the slides compared against USE_AMOUNT (0.1) where USE_THRESHOLD (25) was meant, and
--     their rebuild handlers had the signs swapped (known weaknesses 34): both fixed;
--   * the receipt status for a version conflict is "conflict" (was "inconsistent"), and since a
--     handler's sends are stored as one atomic batch, the others of a conflicting batch get
--     "aborted" and are resent too;
--   * `bus:send`'s third argument keeps the original meaning: false = "expect the version
--     after the last one this service knows of" (the original's local counter), true = "any";
--   * the typos of the slides (`GET AMOUNT`, `data.from account id`) are corrected.
bus:register("nectar")

local PREFIX = "nectar-"
local GET_THRESHOLD = 10000 -- pence: spend over £100 earns points
local GET_PERCENT = 10      -- ... 10% of the spend
local USE_THRESHOLD = 2500  -- pence: spend over £25 may use points
local USE_PERCENT = 10      -- ... cashback of 10% of the spend

bus:add_event_listener("AcceptedTransaction", function(event_type, key, correlation, data)
  local nectar_key = PREFIX .. data.from_account_id
  local account = redis:get(nectar_key)
  if data.amount > GET_THRESHOLD then
    log:info("received " .. event_type .. " and crediting nectar account")
    bus:send("NectarCredit", nectar_key, false, correlation, {
      amount = data.amount * GET_PERCENT // 100,
    })
  end

  if data.amount > USE_THRESHOLD and account and account.balance > data.amount then
    log:info("received " .. event_type .. " and debiting nectar account")
    bus:send("NectarDebit", nectar_key, false, correlation, { amount = data.amount })
    local spent = "Spent " .. data.amount .. " points"
    local remaining = account.balance - data.amount .. " remaining."
    bus:send("ConfirmedCredit", "acc-" .. data.from_account_id, true, correlation, {
      id = data.from_account_id,
      amount = data.amount * USE_PERCENT // 100,
      note = "Nectar cashback! " .. spent .. ", " .. remaining,
    })
  end
end)

bus:add_event_listener("NectarDebit", function(event_type, key, correlation, data)
  local details = redis:get(key)
  if details then
    log:info("received " .. event_type .. " and updating nectar account")
    -- If the account already exists, then remove from the balance.
    details.balance = details.balance - data.amount
    redis:set(key, details)
  else
    -- If the account doesn't exist, then we can't take balance away.
    log:warn("received " .. event_type .. " without nectar account")
  end
end)

bus:add_event_listener("NectarCredit", function(event_type, key, correlation, data)
  local details = redis:get(key)
  if details then
    log:info("received " .. event_type .. " and updating nectar account")
    -- If the account already exists, then add to the balance.
    details.balance = details.balance + data.amount
    redis:set(key, details)
  else
    log:info("received " .. event_type .. " and creating nectar account")
    -- If the account doesn't exist, create it with the new balance.
    redis:set(key, { balance = data.amount })
  end
end)

function handle_receipt(status, event_type, key, correlation, data)
  log:debug("received " .. event_type .. " receipt")
  -- Resend the event. "aborted": it was not written because another event sent by the same
  -- handler conflicted (a handler's sends are one atomic batch).
  if status == "conflict" or status == "aborted" then
    bus:send(event_type, key, event_type == "ConfirmedCredit", correlation, data)
  end
end

-- Only handle the receipts for event types that this service sends out.
bus:add_receipt_listener("NectarDebit", handle_receipt)
bus:add_receipt_listener("NectarCredit", handle_receipt)
bus:add_receipt_listener("ConfirmedCredit", handle_receipt)

function handle_balance_change(event_type, key, correlation, data)
  log:debug("received " .. event_type .. " rebuild")
  local account = redis:get(key)
  if account then
    account.balance = account.balance + data.amount
    redis:set(key, account)
  else
    redis:set(key, { balance = data.amount })
  end
end

bus:add_rebuild_handler("NectarCredit", handle_balance_change)

bus:add_rebuild_handler("NectarDebit", function(event_type, key, correlation, data)
  -- The NectarDebit event has a positive value so negate this so that the same function
  -- can handle both credit and debit balance changes.
  data.amount = -data.amount
  handle_balance_change(event_type, key, correlation, data)
end)
