-- An insider's script that declares the right to mint tokens (tests/tests/insider.rs): its
-- tokens name it as their issuer, so the bank's bfaf accepts none of them.
bus:register("test", { mints_tokens = true })

bus:add_route("/mint/{role}/{sub}", "GET", function(method, path, params)
  return HTTP_OK, { token = crypto.token(params.sub, 3600, { role = params.role, username = params.sub }) }
end)
