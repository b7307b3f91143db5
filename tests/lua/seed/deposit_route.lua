-- Not from the slides: a route that sends, written the way the original's account service did
-- (POST /account/{id}/deposit: an explicit send from a route, a receipt listener that resends
-- on "inconsistent"), to show that receipts reach listeners for sends made from routes.
bus:register("test")

bus:add_route("/deposit/{id}", "POST", function(method, route, args, data)
    bus:send("ConfirmedCredit", "acc-" .. args.id, false, nil, {
        id = args.id,
        amount = data.amount,
        note = "Deposit to " .. args.id,
    })
    return HTTP_CREATED, { id = args.id, status = "pending" }
end)

function handle_receipt(status, event_type, key, correlation, data)
    redis:rpush("receipts", status)
    if status == "inconsistent" then
        bus:send(event_type, key, false, correlation, data)
    end
end
bus:add_receipt_listener("ConfirmedCredit", handle_receipt)

bus:add_route("/receipts", "GET", function()
    return HTTP_OK, { receipts = redis:lrange("receipts") }
end)
