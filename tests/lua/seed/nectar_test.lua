-- The talk's Nectar service, without servers: superclient test tests/lua/seed/nectar.lua
-- "If you spend over £100, you will receive a percentage of your spend as nectar points.
--  If you spend over £25, and have enough nectar points, you will receive cashback."

test("a spend over 100 earns 10% as points", function()
    given("AcceptedTransaction", "trans-1", { transaction_id = 1, from_account_id = 7, to_account_id = 8, amount = 200 })
    expect_sent("NectarCredit", "nectar-7", { amount = 20 })
    expect_nothing_sent()
    expect_state("nectar-7", { balance = 20 })
end)

test("a small spend earns nothing and, without points, pays nothing", function()
    given("AcceptedTransaction", "trans-1", { transaction_id = 1, from_account_id = 7, to_account_id = 8, amount = 50 })
    expect_nothing_sent()
    expect_state("nectar-7", nil)
end)

test("with enough points a spend pays cashback", function()
    given("AcceptedTransaction", "trans-1", { transaction_id = 1, from_account_id = 7, to_account_id = 8, amount = 300 })
    expect_sent("NectarCredit", "nectar-7", { amount = 30 })
    given("AcceptedTransaction", "trans-2", { transaction_id = 2, from_account_id = 7, to_account_id = 8, amount = 20 })
    expect_sent("NectarDebit", "nectar-7", { amount = 20 })
    local credit = expect_sent("ConfirmedCredit", "acc-7", { id = 7, amount = 2 })
    assert(credit.data.note:find("Nectar cashback! Spent 20 points, 10", 1, true), credit.data.note)
    expect_state("nectar-7", { balance = 10 })
end)

test("an inconsistent send is sent again with the next version", function()
    given("AcceptedTransaction", "trans-1", { transaction_id = 1, from_account_id = 7, to_account_id = 8, amount = 200 })
    expect_sent("NectarCredit", "nectar-7", { amount = 20 })
    -- Someone else appends to nectar-7 (a type nectar does not listen to): nectar's next
    -- NectarCredit, sent with `false` (the version after the last one it knows), conflicts;
    -- its receipt listener sees "inconsistent" and resends, which is stored.
    given("NectarAdjusted", "nectar-7", { amount = 1 }, { from = "operator" })
    given("AcceptedTransaction", "trans-2", { transaction_id = 2, from_account_id = 7, to_account_id = 8, amount = 150 })
    expect_sent("NectarCredit", "nectar-7", { amount = 15 })
    expect_nothing_sent()
    local versions = {}
    for _, e in ipairs(events()) do
        if e.key == "nectar-7" then versions[#versions + 1] = e.type .. "@" .. e.version end
    end
    expect_equal(versions, { "NectarCredit@0", "NectarAdjusted@1", "NectarCredit@2" })
    expect_state("nectar-7", { balance = 35 })
end)
