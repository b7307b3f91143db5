-- The talk's account fragments, without servers: superclient test tests/lua/seed/account.lua

test("an account creation request creates the next account", function()
    given_state("__account_id", { id = 0 })
    given("AccountCreationRequest", "creation-1", { request_id = 1, username = "ada" })
    expect_sent("AccountCreated", "acc-1", { acc_id = 1, request_id = 1 })
    expect_state("__account_id", { id = 1 })
    local status, body = request("GET", "/account/1")
    expect_equal(status, 200)
    expect_equal(body, { id = 1, balance = 0 })
    given("AccountCreationRequest", "creation-2", { request_id = 2, username = "ada" })
    expect_sent("AccountCreated", "acc-2", { acc_id = 2, request_id = 2 })
end)

test("an unknown account is not found", function()
    local status, body = request("GET", "/account/9")
    expect_equal(status, 404)
    expect_equal(body.error, "could not find account with id: 9")
end)
