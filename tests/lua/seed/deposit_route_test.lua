-- superclient test tests/lua/seed/deposit_route.lua

test("a route's send gets its receipt, and an inconsistent one is resent", function()
    local status = request("POST", "/deposit/1", { amount = 5 })
    expect_equal(status, 201)
    expect_sent("ConfirmedCredit", "acc-1", { amount = 5 })
    -- Someone else appends to acc-1: the route's next send (the version after the last one it
    -- knows) is inconsistent, and its receipt listener resends it.
    given("ConfirmedDebit", "acc-1", { amount = 1 }, { from = "account" })
    request("POST", "/deposit/1", { amount = 7 })
    expect_sent("ConfirmedCredit", "acc-1", { amount = 7 })
    expect_nothing_sent()
    local _, body = request("GET", "/receipts")
    expect_equal(body.receipts, { "success", "inconsistent", "success" })
end)
