-- The Nectar service as the talk showed it ("Adding a new service to the platform", slides
-- "Nectar Service (1/10)" to "(10/10)"), typos fixed only:
--   `GET THRESHOLD`, `GET AMOUNT`, `USE THRESHOLD`, `USE AMOUNT` -> underscores;
--   the unclosed tables of the two bus:send calls closed with `})`;
--   `data.from account id.` -> `data.from_account_id,`;
--   the listener's lost `end)` restored (the slides split the function across pages);
--   the second `handle_balance_change` slide (its body elided as `-- ...`) is the same
--   function as the first, so it is written once.
-- Everything else, including the original's quirks (the spend check compares with USE_AMOUNT
-- where USE_THRESHOLD was meant, amounts are plain numbers, the receipt listener resends on
-- "inconsistent"), is as on the slides.

bus:register("nectar")
local PREFIX = "nectar-"
local GET_THRESHOLD = 100.0
local GET_AMOUNT = 0.1
local USE_THRESHOLD = 25.0
local USE_AMOUNT = 0.1

bus:add_event_listener("AcceptedTransaction", function(event_type, key, correlation, data)
    local nectar_key = PREFIX .. data.from_account_id
    local account = redis:get(nectar_key)
    if data.amount > GET_THRESHOLD then
        log:info("received " .. event_type .. " and debiting nectar account")
        bus:send("NectarCredit", nectar_key, false, correlation, {
            amount = data.amount * GET_AMOUNT
        })
    end

    if data.amount > USE_AMOUNT and account and account.balance > data.amount then
        log:info("received " .. event_type .. " and crediting nectar account")
        bus:send("NectarDebit", nectar_key, false, correlation, { amount = data.amount })
        local spent = "Spent " .. data.amount .. " points"
        local remaining = account.balance - data.amount .. " remaining."
        bus:send("ConfirmedCredit", "acc-" .. data.from_account_id, true, correlation, {
            id = data.from_account_id,
            amount = data.amount * USE_AMOUNT,
            note = "Nectar cashback! " .. spent .. ", " .. remaining,
        })
    end
end)

bus:add_event_listener("NectarDebit", function(event_type, key, correlation, data)
    local details = redis:get(key)
    if details then
        log:info("received " .. event_type .. " and updating nectar account")
        -- If the account already exists, then remove to the balance.
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
    -- Resend the event.
    if status == "inconsistent" then
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
bus:add_rebuild_handler("NectarDebit", handle_balance_change)

bus:add_rebuild_handler("NectarCredit", function(event_type, key, correlation, data)
    -- The NectarDebit event has a positive value so negate this so that the same function
    -- can handle both credit and debit balance changes.
    data.amount = -data.amount
    handle_balance_change(event_type, key, correlation, data)
end)
