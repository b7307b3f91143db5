//! The basics every script has: the sandboxed standard library, `json`, `log` (and `print`),
//! the `HTTP_*` status constants and `problem` (an error answer).

use super::{args, err, LResult};
use crate::script::convert::{json_to_lua, lua_to_json_text};
use mlua::{Lua, LuaSerdeExt, MultiValue, Table, Value};
use std::sync::Arc;

pub fn install(lua: &Lua) -> LResult<()> {
    sandbox(lua)?;
    install_json(lua)?;
    install_log(lua)?;
    install_http_constants(lua)?;
    install_problem(lua)
}

/// Removes what a service script must not reach: files, processes, the debug library,
/// bytecode. Leaves `os.time/clock/date/difftime`. `load` accepts text chunks only. The
/// standard library tables and the string metatable are made read-only; `__gc` finalizers are
/// refused (they would run with hooks off, outside any budget).
fn sandbox(lua: &Lua) -> LResult<()> {
    let g = lua.globals();
    for name in ["dofile", "loadfile", "require", "module", "collectgarbage"] {
        g.raw_set(name, Value::Nil)?;
    }
    let string: Table = g.get("string")?;
    string.raw_set("dump", Value::Nil)?;
    // The pattern functions, bounded (C's backtracking matcher is not).
    super::bounded::install(lua, &string)?;
    g.raw_set("__sequent_plain", lua.create_function(|_, v: Value| Ok(matches!(&v, Value::Table(t) if t.metatable().is_none())))?)?;
    let os: Table = g.get("os")?;
    let safe_os = lua.create_table()?;
    for name in ["time", "clock", "date", "difftime"] {
        safe_os.raw_set(name, os.get::<Value>(name)?)?;
    }
    g.raw_set("os", safe_os)?;
    let budget = lua.app_data_ref::<Arc<crate::script::budget::Budget>>().map(|b| b.clone());
    g.raw_set(
        "__sequent_over_budget",
        lua.create_function(move |_, ()| Ok(budget.as_ref().is_some_and(|b| b.exceeded.load(std::sync::atomic::Ordering::Relaxed))))?,
    )?;
    lua.load(
        r##"
        local raw_load, raw_pcall, raw_xpcall, raw_resume = load, pcall, xpcall, coroutine.resume
        local raw_setmetatable, rawget = setmetatable, rawget
        local over, error, type = __sequent_over_budget, error, type
        local plain, select, tointeger, maxinteger = __sequent_plain, select, math.tointeger, math.maxinteger
        __sequent_over_budget, __sequent_plain = nil, nil
        -- text chunks only: precompiled bytecode can break out of any sandbox; at most 1 MiB
        -- (compiling runs in C, outside the instruction budget)
        local MAX_CHUNK = 1 << 20
        load = function(chunk, name, mode, env)
            if type(chunk) == "string" and #chunk > MAX_CHUNK then return nil, "chunk too large (load takes at most 1 MiB)" end
            if type(chunk) == "function" then
                local reader, total = chunk, 0
                chunk = function()
                    local piece = reader()
                    if type(piece) == "string" then
                        total = total + #piece
                        if total > MAX_CHUNK then error("chunk too large (load takes at most 1 MiB)") end
                    end
                    return piece
                end
            end
            return raw_load(chunk, name, "t", env)
        end
        -- The table functions loop in C, where the instruction hook never fires: a loop whose
        -- length a script chooses (table.move's range, the __len of a table with a metatable)
        -- runs in Lua instead, where the budget and the time limit see it. Plain tables keep
        -- the C functions (their loops are bounded by what the table holds).
        local raw_move, raw_insert, raw_remove, raw_concat, raw_sort = table.move, table.insert, table.remove, table.concat, table.sort
        local BIG = 1 << 16
        local function int_arg(v, n, name)
            local i = tointeger(v)
            if i == nil then error("bad argument #" .. n .. " to '" .. name .. "' (number has no integer representation)", 3) end
            return i
        end
        local function with_metatable(t) return type(t) == "table" and not plain(t) end
        table.move = function(a1, f, e, t, a2)
            f, e, t = int_arg(f, 2, "move"), int_arg(e, 3, "move"), int_arg(t, 4, "move")
            -- (a wrapped-around e - f is negative: C checks and refuses it)
            if e < f or e - f < BIG then return raw_move(a1, f, e, t, a2) end
            raw_move(a1, f, f - 1, t, a2) -- checks the arguments' types, moves nothing
            local dest = a2 == nil and a1 or a2
            local n = e - f + 1
            if t > maxinteger - n + 1 then error("bad argument #4 to 'move' (destination wrap around)", 2) end
            if t > e or t <= f or (a2 ~= nil and a1 ~= a2) then
                for i = 0, n - 1 do dest[t + i] = a1[f + i] end
            else
                for i = n - 1, 0, -1 do dest[t + i] = a1[f + i] end
            end
            return dest
        end
        table.insert = function(t, ...)
            if not with_metatable(t) then return raw_insert(t, ...) end
            local e = #t + 1
            local nargs = select("#", ...)
            if nargs == 1 then t[e] = (...) return end
            if nargs ~= 2 then error("wrong number of arguments to 'insert'", 2) end
            local pos, v = ...
            pos = int_arg(pos, 2, "insert")
            if pos < 1 or pos > e then error("bad argument #2 to 'insert' (position out of bounds)", 2) end
            for i = e, pos + 1, -1 do t[i] = t[i - 1] end
            t[pos] = v
        end
        table.remove = function(t, pos)
            if not with_metatable(t) then return raw_remove(t, pos) end
            local size = #t
            if pos == nil then pos = size else pos = int_arg(pos, 2, "remove") end
            if pos ~= size and (pos < 1 or pos > size + 1) then error("bad argument #2 to 'remove' (position out of bounds)", 2) end
            local v = t[pos]
            while pos < size do t[pos] = t[pos + 1]; pos = pos + 1 end
            t[pos] = nil
            return v
        end
        table.concat = function(t, sep, i, j)
            if not with_metatable(t) then return raw_concat(t, sep, i, j) end
            raw_concat({}, sep) -- checks sep
            i = i == nil and 1 or int_arg(i, 3, "concat")
            j = j == nil and #t or int_arg(j, 4, "concat")
            local parts = {}
            for k = i, j do
                local v = t[k]
                if type(v) ~= "string" and type(v) ~= "number" then
                    error("invalid value (" .. type(v) .. ") at index " .. k .. " in table for 'concat'", 2)
                end
                parts[#parts + 1] = v
            end
            return raw_concat(parts, sep)
        end
        local function lt(a, b) return a < b end
        table.sort = function(t, comp)
            -- Sorting without a comparator runs entirely in C: a long one gets a Lua comparator.
            if comp == nil and (with_metatable(t) or (type(t) == "table" and #t > BIG)) then comp = lt end
            return raw_sort(t, comp)
        end
        -- an exhausted instruction budget must not be swallowed by pcall
        local function check(ok, ...)
            if not ok and over() then error((...), 0) end
            return ok, ...
        end
        pcall = function(f, ...) return check(raw_pcall(f, ...)) end
        -- The budget's error is raised inside the hook, where Lua runs the message handler
        -- with hooks off: a handler that loops would never be stopped, so it is skipped then.
        xpcall = function(f, h, ...)
            return check(raw_xpcall(f, function(...) if over() then return ... end return h(...) end, ...))
        end
        -- Finalizers run with hooks off (no budget) at some later collection: none allowed.
        setmetatable = function(t, mt)
            if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
                error("__gc metamethods are not allowed: finalizers would run outside any call's budget", 2)
            end
            return raw_setmetatable(t, mt)
        end
        coroutine.resume = function(co, ...) return check(raw_resume(co, ...)) end
        print = function(...)
            local parts = {}
            for i = 1, select("#", ...) do parts[#parts + 1] = tostring((select(i, ...))) end
            log:info(table.concat(parts, " "))
        end
        -- The standard libraries are shared by every call of a state: read-only, so that no
        -- call changes them for the next (string methods too: the string metatable is locked).
        local frozen, raw_rawset = {}, rawset
        for _, name in ipairs({ "string", "table", "math", "utf8", "coroutine", "os" }) do
            local proxy = setmetatable({}, {
                __index = _G[name],
                __newindex = function() error(name .. " is read-only: the standard libraries are shared by every call", 2) end,
                __metatable = false,
            })
            frozen[proxy] = true
            raw_rawset(_G, name, proxy)
        end
        getmetatable("").__metatable = false
        rawset = function(t, k, v)
            if frozen[t] then error("the standard libraries are read-only", 2) end
            return raw_rawset(t, k, v)
        end
        "##,
    )
    .set_name("=sandbox")
    .exec()
}

fn install_json(lua: &Lua) -> LResult<()> {
    let json = lua.create_table()?;
    json.raw_set(
        "encode",
        lua.create_function(|lua, values: MultiValue| {
            let value: Value = args(lua, values, "json.encode")?;
            lua_to_json_text(&value).map_err(|e| mlua::Error::runtime(format!("json.encode: {e}")))
        })?,
    )?;
    json.raw_set(
        "decode",
        lua.create_function(|lua, values: MultiValue| {
            let text: String = args(lua, values, "json.decode")?;
            let value: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| mlua::Error::runtime(format!("json.decode: not valid JSON: {e}")))?;
            json_to_lua(lua, &value)
        })?,
    )?;
    // Marks a table as an array, so an empty one encodes as [] rather than {}.
    json.raw_set(
        "array",
        lua.create_function(|lua, values: MultiValue| {
            let t: Option<Table> = args(lua, values, "json.array")?;
            let t = match t {
                Some(t) => t,
                None => lua.create_table()?,
            };
            t.set_metatable(Some(lua.array_metatable()))?;
            Ok(t)
        })?,
    )?;
    json.raw_set("null", lua.null())?;
    lua.globals().raw_set("json", json)
}

fn install_log(lua: &Lua) -> LResult<()> {
    let log = lua.create_table()?;
    for level in ["trace", "debug", "info", "warn", "error"] {
        let f = lua.create_function(move |_lua, mut values: MultiValue| {
            if matches!(values.front(), Some(Value::Table(t)) if t.raw_get::<bool>("__is_log").unwrap_or(false)) {
                values.pop_front();
            }
            let enabled = match level {
                "trace" => tracing::enabled!(target: "lua", tracing::Level::TRACE),
                "debug" => tracing::enabled!(target: "lua", tracing::Level::DEBUG),
                "info" => tracing::enabled!(target: "lua", tracing::Level::INFO),
                "warn" => tracing::enabled!(target: "lua", tracing::Level::WARN),
                _ => tracing::enabled!(target: "lua", tracing::Level::ERROR),
            };
            // Nothing to write and nothing that could be wrong (tables are still checked): a
            // rebuild handler's log:debug costs no formatting.
            if !enabled && !values.is_empty() && values.iter().all(|v| matches!(v, Value::String(_) | Value::Integer(_) | Value::Number(_) | Value::Boolean(_))) {
                return Ok(());
            }
            let mut parts = Vec::with_capacity(values.len());
            for v in values.iter() {
                parts.push(match v {
                    Value::String(s) => s.to_string_lossy(),
                    Value::Integer(_) | Value::Number(_) | Value::Boolean(_) => v.to_string()?,
                    Value::Table(_) => lua_to_json_text(v).map_err(|e| mlua::Error::runtime(format!("log:{level}: {e}")))?,
                    other => return err(format!("log:{level}: cannot log a {} (log strings, numbers, booleans or tables)", other.type_name())),
                });
            }
            if parts.is_empty() {
                return err(format!("log:{level}: nothing to log"));
            }
            let msg = parts.join(" ");
            match level {
                "trace" => tracing::trace!(target: "lua", "{msg}"),
                "debug" => tracing::debug!(target: "lua", "{msg}"),
                "info" => tracing::info!(target: "lua", "{msg}"),
                "warn" => tracing::warn!(target: "lua", "{msg}"),
                _ => tracing::error!(target: "lua", "{msg}"),
            }
            Ok(())
        })?;
        log.raw_set(level, f)?;
    }
    log.raw_set("__is_log", true)?;
    lua.globals().raw_set("log", log)
}

fn install_http_constants(lua: &Lua) -> LResult<()> {
    let g = lua.globals();
    for (name, code) in HTTP_STATUS {
        g.raw_set(format!("HTTP_{name}"), *code)?;
    }
    Ok(())
}

/// `problem(status, code, detail[, extra])` → `status, body`: a route's error answer as RFC 9457
/// problem details, shaped as every Sequent API's (`sequent_protocol::problem`): `type` and
/// `title` derived from `code`, `extra`'s members beside them (they cannot replace those five).
fn install_problem(lua: &Lua) -> LResult<()> {
    let f = lua.create_function(|lua, values: MultiValue| {
        let (status, code, detail, extra): (i64, String, Option<String>, Option<Table>) = args(lua, values, "problem")?;
        if !(400..=599).contains(&status) {
            return err(format!("problem: the status must be an error status (400 to 599), got {status}"));
        }
        if code.is_empty() {
            return err("problem: the code must not be empty".to_string());
        }
        let body = lua.create_table()?;
        if let Some(extra) = extra {
            for pair in extra.pairs::<Value, Value>() {
                let (k, v) = pair?;
                body.raw_set(k, v)?;
            }
        }
        body.raw_set("type", sequent_protocol::problem::type_uri(&code))?;
        body.raw_set("title", sequent_protocol::problem::title(&code))?;
        body.raw_set("status", status)?;
        body.raw_set("detail", detail)?;
        body.raw_set("code", code)?;
        Ok((status, body))
    })?;
    lua.globals().raw_set("problem", f)
}

/// Standard status codes, named as in the Rust `http` crate.
const HTTP_STATUS: &[(&str, u16)] = &[
    ("CONTINUE", 100), ("SWITCHING_PROTOCOLS", 101), ("PROCESSING", 102),
    ("OK", 200), ("CREATED", 201), ("ACCEPTED", 202), ("NON_AUTHORITATIVE_INFORMATION", 203), ("NO_CONTENT", 204),
    ("RESET_CONTENT", 205), ("PARTIAL_CONTENT", 206), ("MULTI_STATUS", 207), ("ALREADY_REPORTED", 208), ("IM_USED", 226),
    ("MULTIPLE_CHOICES", 300), ("MOVED_PERMANENTLY", 301), ("FOUND", 302), ("SEE_OTHER", 303), ("NOT_MODIFIED", 304),
    ("USE_PROXY", 305), ("TEMPORARY_REDIRECT", 307), ("PERMANENT_REDIRECT", 308),
    ("BAD_REQUEST", 400), ("UNAUTHORIZED", 401), ("PAYMENT_REQUIRED", 402), ("FORBIDDEN", 403), ("NOT_FOUND", 404),
    ("METHOD_NOT_ALLOWED", 405), ("NOT_ACCEPTABLE", 406), ("PROXY_AUTHENTICATION_REQUIRED", 407), ("REQUEST_TIMEOUT", 408),
    ("CONFLICT", 409), ("GONE", 410), ("LENGTH_REQUIRED", 411), ("PRECONDITION_FAILED", 412), ("PAYLOAD_TOO_LARGE", 413),
    ("URI_TOO_LONG", 414), ("UNSUPPORTED_MEDIA_TYPE", 415), ("RANGE_NOT_SATISFIABLE", 416), ("EXPECTATION_FAILED", 417),
    ("IM_A_TEAPOT", 418), ("MISDIRECTED_REQUEST", 421), ("UNPROCESSABLE_ENTITY", 422), ("LOCKED", 423), ("FAILED_DEPENDENCY", 424),
    ("TOO_EARLY", 425), ("UPGRADE_REQUIRED", 426), ("PRECONDITION_REQUIRED", 428), ("TOO_MANY_REQUESTS", 429),
    ("REQUEST_HEADER_FIELDS_TOO_LARGE", 431), ("UNAVAILABLE_FOR_LEGAL_REASONS", 451),
    ("INTERNAL_SERVER_ERROR", 500), ("NOT_IMPLEMENTED", 501), ("BAD_GATEWAY", 502), ("SERVICE_UNAVAILABLE", 503),
    ("GATEWAY_TIMEOUT", 504), ("HTTP_VERSION_NOT_SUPPORTED", 505), ("VARIANT_ALSO_NEGOTIATES", 506), ("INSUFFICIENT_STORAGE", 507),
    ("LOOP_DETECTED", 508), ("NOT_EXTENDED", 510), ("NETWORK_AUTHENTICATION_REQUIRED", 511),
];


#[cfg(test)]
mod tests {
    use mlua::{Lua, Table};

    fn lua() -> Lua {
        let lua = Lua::new();
        super::install(&lua).unwrap();
        lua
    }

    #[test]
    fn problem_answers_rfc_9457_details_shaped_as_the_protocols() {
        let lua = lua();
        let (status, body): (i64, Table) =
            lua.load(r#"return problem(HTTP_CONFLICT, "insufficient funds", "Not enough.", { balance_cents = 5, type = "mine" })"#).eval().unwrap();
        assert_eq!(status, 409);
        let expected = sequent_protocol::problem::Problem::new(409, "insufficient funds", "Not enough.").with("balance_cents", 5);
        let expected: serde_json::Value = serde_json::from_str(&expected.to_json()).unwrap();
        let got = crate::script::convert::lua_to_json(&mlua::Value::Table(body)).unwrap();
        assert_eq!(got, expected, "extras cannot replace a standard member");
    }

    #[test]
    fn problem_refuses_a_status_that_is_no_error_and_an_empty_code() {
        let lua = lua();
        let e = lua.load(r#"return problem(HTTP_OK, "fine")"#).exec().unwrap_err().to_string();
        assert!(e.contains("400 to 599"), "{e}");
        let e = lua.load(r#"return problem(400, "")"#).exec().unwrap_err().to_string();
        assert!(e.contains("code must not be empty"), "{e}");
    }
}
