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

-- C functions that run long without executing a Lua instruction (issue 13): the instruction
-- hook never fires inside them, so they need bounds of their own.
local function huge_len() return setmetatable({}, { __len = function() return 1 << 50 end }) end
attempts["table.move"] = function() table.move({}, 1, 1 << 50, 1, {}); return "moved" end
attempts["table.move-string"] = function() table.move("abc", 1, 1 << 50, 1, {}); return "moved" end
attempts["table.insert-len"] = function() table.insert(huge_len(), 1, "x"); return "inserted" end
attempts["table.remove-len"] = function() table.remove(huge_len(), 1); return "removed" end
attempts["table.concat-index"] = function()
  return #table.concat(setmetatable({}, { __index = function() return "" end }), "", 1, 1 << 50)
end
attempts["table.sort-index"] = function()
  table.sort(setmetatable({}, { __index = os.clock, __len = function() return (1 << 31) - 2 end }))
end
-- Backtracking: each of these would run for years in C's matcher.
local A = string.rep("a", 100000)
attempts["find-bomb"] = function() return string.find(A, ".-.-.-.-.-.-.-b") end
attempts["match-bomb"] = function() return A:match("^(.-)(.-)(.-)(.-)(.-)x$") end
attempts["gmatch-bomb"] = function() for w in A:gmatch("a-a-a-a-a-b") do return w end end
attempts["gsub-bomb"] = function() return (A:gsub(".-.-.-.-.-b", "")) end
attempts["gsub-fn-bomb"] = function() return (A:gsub("a", function() while true do end end)) end
-- C's plain search is quadratic on this; it is linear now: an answer at once.
attempts["plain-find"] = function()
  local s = string.rep("a", 1 << 22)
  return tostring(s:find(string.rep("a", 1 << 21) .. "b", 1, true))
end
-- Honest pattern work still gets its answers, as Lua gives them.
attempts["patterns"] = function()
  local out = {}
  out[#out + 1] = table.concat({ ("key = value"):match("^(%w+)%s*=%s*(%w+)$") }, ",")
  out[#out + 1] = table.concat({ ("hello world"):find("o w") }, ",")
  out[#out + 1] = (("hello world"):gsub("o", "0"))
  out[#out + 1] = (("abc"):gsub("%w", "%0%0"))
  out[#out + 1] = (("hello world"):gsub("(%w+)", "<%1>"))
  out[#out + 1] = (("$name is $age"):gsub("%$(%w+)", { name = "ann", age = 7 }))
  out[#out + 1] = (("abc"):gsub("", "-"))
  local words = {}
  for w in ("one two  three"):gmatch("%a+") do words[#words + 1] = w end
  out[#out + 1] = table.concat(words, "|")
  out[#out + 1] = tostring(("f(a(b)c)d"):find("%b()"))
  out[#out + 1] = tostring(("THE (quick) fox"):find("%f[%a]%a+", 5))
  out[#out + 1] = table.concat({ ("hello"):match("()ll()") }, ",")
  out[#out + 1] = tostring(("a.b"):find(".", 1, true))
  out[#out + 1] = select(2, ("aaa"):gsub("a", "b", 2)) .. ""
  local moved = table.move({ 1, 2, 3 }, 1, 3, 2)
  out[#out + 1] = table.concat(moved, ",")
  local t = setmetatable({ 1, 2, 3 }, {})
  table.insert(t, 1, 0); table.insert(t, 9); table.remove(t, 2)
  out[#out + 1] = table.concat(t, ",")
  local s = { 5, 3, 9, 1 }
  table.sort(s)
  out[#out + 1] = table.concat(s, ",")
  return table.concat(out, " ; ")
end

bus:add_route("/try/{name}", "GET", function(method, path, params)
  local f = attempts[params.name]
  if not f then return HTTP_NOT_FOUND, { error = "no such attempt" } end
  local result = f()
  return HTTP_OK, { result = result == nil and json.null or result }
end)

bus:add_route("/ok", "GET", function() return HTTP_OK, { upper = ("abc"):upper(), len = #string.rep("x", 3) } end)

-- Events: a handler that runs a pattern bomb (kind = "bomb") is stopped, retried and parked;
-- the others count.
bus:add_event_listener("Tried", function(event_type, key, correlation, data)
  if data.kind == "bomb" then string.find(A, ".-.-.-.-.-.-.-b") end
  redis:incr("count:" .. key)
end)
