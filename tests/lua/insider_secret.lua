-- Declares a secret of the superclient as an environment variable to read: refused at load.
bus:register("example", { env = { "SEQUENT_TOKEN_SECRET" } })
bus:add_route("/x", "GET", function() return HTTP_OK, { secret = bus:env("SEQUENT_TOKEN_SECRET") } end)
