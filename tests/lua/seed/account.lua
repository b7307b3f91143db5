-- The account service as far as the talk showed it (slides "Superclient": the GET
-- /account/{id} route and the AccountCreationRequest listener), typos fixed only: the route's
-- error string broken over two lines (`... ..` / `args.id`) is joined. The slides do not show
-- the top of the script or `create_account`; they are completed below as the original's
-- account.lua of the talk's time had them (marked "not on the slides"), and `__account_id`
-- starts at `{ id = 0 }` (the original set it while loading; a Sequent script's state is
-- reached only from handlers and routes, so whoever deploys it sets it once, as the test does).

-- not on the slides
bus:register("account")
local PREFIX = "acc-"
local ID_KEY = "__account_id"

-- not on the slides: the original's helper, as it was when the talk was given
function create_account(id, request_id, send_event)
    local key = PREFIX .. id
    local account = {
        id = id,
        balance = 0,
        statements = {},
        request_id = request_id
    }
    redis:set(key, account)
    if send_event then
        bus:send("AccountCreated", key, true, nil, {
            acc_id = id, request_id = request_id
        })
    end
end

bus:add_route("/account/{id}", "GET", function(method, route, args, data)
    log:debug("received " .. route .. " request")
    local account = redis:get(PREFIX .. args.id)
    if account then
        return HTTP_OK, { id = account.id, balance = account.balance }
    else
        return HTTP_NOT_FOUND, { error = "could not find account with id: " .. args.id }
    end
end)

bus:add_event_listener("AccountCreationRequest", function(event_type, key,
correlation, data)
    log:debug("received " .. event_type .. " event")
    -- Get the next ID.
    local last_id = redis:get(ID_KEY)
    local next_id = last_id.id + 1
    redis:set(ID_KEY, { id = next_id })

-- Create a new account and send the event out.
    create_account(next_id ,data.request_id, true)
end)
