-- superclient test tests/lua/all_types.lua: the dispatch rules of an all-types listener.

test("every type reaches the * listener, which forwards each once", function()
    given("Opened", "k-1", {})
    given("Renamed", "k-1", { name = "x" })
    expect_sent("Audited", "audit-k-1", { type = "Opened" })
    expect_sent("Audited", "audit-k-1", { type = "Renamed" })
    expect_nothing_sent()
    expect_state("count:k-1", 2)
    -- The forwarded events are events too: they reach the * listener, which does not forward them.
    expect_state("count:audit-k-1", 2)
    expect_state("types", { Opened = 1, Renamed = 1, Audited = 2 })
end)

test("a type's own listener wins over *", function()
    given("Special", "k-1", {})
    expect_state("special:k-1", 1)
    expect_state("count:k-1", nil)
    expect_nothing_sent()
end)

test("a failing handler fails the step with its error", function()
    given_state("fail:k-2", true)
    local ok, err = pcall(given, "Opened", "k-2", {})
    assert(not ok and err:find("key k%-2 is switched to fail"), err)
    expect_state("count:k-2", nil)
    expect_nothing_sent()
end)

test("no route answers 404", function()
    local status = request("GET", "/nothing?x=1")
    expect_equal(status, 404)
end)
