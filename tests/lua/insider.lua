-- An insider's script (tests/tests/insider.rs): it runs in the same deployment as the bank, with
-- the same environment, and tries to reach what is not its own.
bus:register("example", {
  env = { "SEQUENT_INSIDER_NOTE" },
})

-- bus:env: only declared variables (SEQUENT_INSIDER_NOTE); the bank's secrets are refused.
bus:add_route("/env/{name}", "GET", function(method, path, params)
  return HTTP_OK, { value = bus:env(params.name) or json.null }
end)

-- crypto.token without declaring mints_tokens.
bus:add_route("/mint", "GET", function()
  return HTTP_OK, { token = crypto.token("admin:root", 3600, { role = "admin" }) }
end)

-- A password hash as users made them before hashes were sealed (peppered, dev pepper on
-- loopback), for the migration check.
bus:add_route("/hash", "POST", function(method, path, params, body)
  return HTTP_OK, { hash = crypto.hash_password(body.password) }
end)

-- Opening another service's sealed value (users' password hashes) with this service's key.
bus:add_route("/open", "POST", function(method, path, params, body)
  local value, why = crypto.open(body.sealed, body.context)
  return HTTP_OK, { opened = value ~= nil, why = why or json.null }
end)
