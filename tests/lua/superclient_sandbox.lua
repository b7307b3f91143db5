-- Routes that try to break out of the sandbox or to take the instance down
-- (tests/tests/superclient_sandbox.rs). GET /try/<name> runs one attempt.
bus:register("example")

local attempts = {}

-- Reported, not raised: what the forbidden names give.
attempts["loadstring"] = function() return loadstring("return 1") end
attempts["package"] = function() return package.loaded.os end
attempts["require-io"] = function() return require("io") end
attempts["load-env-io"] = function() return tostring(load("return io or debug or (os and os.execute)", "x", "t", {})()) end
attempts["load-bytecode"] = function() local f, e = load(string.char(27) .. "LuaT\0", "x", "bt"); assert(f, e) end
attempts["getmetatable-string"] = function() return tostring(getmetatable("")) end

-- The string metatable is shared by every call of the state: changing it must not leak.
attempts["string-meta-method"] = function() string.upper = function() return "pwned" end; return ("abc"):upper() end
attempts["string-meta-index"] = function()
  local mt = getmetatable("")
  mt.__index = function() return function() return "pwned" end end
  return ("abc"):upper()
end
attempts["rawset-string"] = function() rawset(string, "upper", function() return "pwned" end) end
attempts["setmetatable-library"] = function() setmetatable(string, {}) end
attempts["setmetatable-string"] = function() return setmetatable("", {}) end

-- Memory bombs.
attempts["string.rep"] = function() return #string.rep("x", 1 << 40) end
attempts["string.rep-sep"] = function() return #string.rep("ab", 200000000, "cd") end
attempts["string-doubling"] = function() local s = "x"; while true do s = s .. s end end
attempts["table-growth"] = function() local t = {}; local i = 0; while true do i = i + 1; t[i] = i end end
attempts["coroutine-bomb"] = function() local t = {}; for i = 1, 1e8 do t[i] = coroutine.create(function() end) end end

-- Loops and recursion.
attempts["infinite-loop"] = function() while true do end end
attempts["deep-recursion"] = function() local function f(n) return 1 + f(n + 1) end; return f(1) end
attempts["coroutine-loop"] = function() coroutine.wrap(function() while true do end end)() end
attempts["coroutine-yield-loop"] = function()
  local co = coroutine.wrap(function() while true do coroutine.yield() end end)
  while true do co() end
end
attempts["pcall-in-coroutine"] = function()
  coroutine.wrap(function() while true do pcall(function() while true do end end) end end)()
end

-- Errors in error handling.
attempts["tostring-error"] = function() error(setmetatable({}, { __tostring = function() error("again") end })) end
attempts["tostring-loop"] = function() error(setmetatable({}, { __tostring = function() while true do end end })) end
attempts["error-table"] = function() error({ code = 42 }) end
attempts["error-nil"] = function() error(nil) end
attempts["xpcall-handler-error"] = function()
  local ok, e = xpcall(function() error("first") end, function() error("in the handler") end)
  error(e)
end
attempts["xpcall-handler-loop"] = function() xpcall(function() error("first") end, function() while true do end end) end
attempts["gc-loop"] = function()
  -- A finalizer that never ends runs at some later collection: it must be stopped there too.
  for i = 1, 1000 do setmetatable({}, { __gc = function() while true do end end }) end
  return "armed"
end
attempts["churn"] = function() local t = {}; for i = 1, 200000 do t[i] = { i } end; return #t end

bus:add_route("/try/{name}", "GET", function(method, path, params)
  local f = attempts[params.name]
  if not f then return HTTP_NOT_FOUND, { error = "no such attempt" } end
  local result = f()
  return HTTP_OK, { result = result == nil and json.null or result }
end)

bus:add_route("/ok", "GET", function() return HTTP_OK, { upper = ("abc"):upper(), len = #string.rep("x", 3) } end)
