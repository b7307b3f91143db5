//! Bounded replacements of the C library functions that can run long without executing a Lua
//! instruction (so without the instruction hook noticing): `string.find`, `string.match`,
//! `string.gmatch` and `string.gsub` run the [`super::pattern`] matcher, which charges its steps
//! to the call's budget and looks at its clock; plain searches are linear. The table functions
//! are wrapped in Lua by the sandbox (`basics.rs`), where the hook sees their loops.

use super::pattern::{self, Capture, Matcher, Stop};
use crate::script::budget::{Budget, MemoryLimit};
use mlua::{Function, Lua, MultiValue, Table, Value};
use std::sync::Arc;

type LResult<T> = mlua::Result<T>;

/// Replaces the pattern functions in the (raw) string table.
pub fn install(lua: &Lua, string: &Table) -> LResult<()> {
    string.raw_set("find", lua.create_function(|lua, args: MultiValue| find_aux(lua, args, true))?)?;
    string.raw_set("match", lua.create_function(|lua, args: MultiValue| find_aux(lua, args, false))?)?;
    string.raw_set("gmatch", lua.create_function(gmatch)?)?;
    string.raw_set("gsub", lua.create_function(gsub)?)?;
    Ok(())
}

fn budget(lua: &Lua) -> Option<Arc<Budget>> {
    lua.app_data_ref::<Arc<Budget>>().map(|b| b.clone())
}

fn arg_error<T>(n: usize, name: &str, msg: impl std::fmt::Display) -> LResult<T> {
    Err(mlua::Error::runtime(format!("bad argument #{n} to '{name}' ({msg})")))
}

fn check_string(lua: &Lua, args: &MultiValue, n: usize, name: &str) -> LResult<mlua::LuaString> {
    let v = args.get(n - 1).cloned().unwrap_or(Value::Nil);
    let type_name = v.type_name();
    match v {
        Value::String(s) => Ok(s),
        Value::Integer(_) | Value::Number(_) => match lua.coerce_string(v)? {
            Some(s) => Ok(s),
            None => arg_error(n, name, format!("string expected, got {type_name}")),
        },
        _ => arg_error(n, name, format!("string expected, got {}", if type_name == "nil" { "no value" } else { type_name })),
    }
}

fn opt_integer(lua: &Lua, args: &MultiValue, n: usize, name: &str, default: i64) -> LResult<i64> {
    match args.get(n - 1).cloned().unwrap_or(Value::Nil) {
        Value::Nil => Ok(default),
        Value::Integer(i) => Ok(i),
        v => {
            let type_name = v.type_name();
            match lua.coerce_integer(v)? {
                Some(i) => Ok(i),
                None => arg_error(n, name, format!("number has no integer representation or is not a number (got {type_name})")),
            }
        }
    }
}

fn truthy(v: Option<&Value>) -> bool {
    !matches!(v, None | Some(Value::Nil) | Some(Value::Boolean(false)))
}

/// Runs `f` with a matcher of `pat` in `src` that charges the call's budget.
fn with_matcher<R>(lua: &Lua, src: &[u8], pat: &[u8], f: impl FnOnce(&mut Matcher<'_>) -> LResult<R>) -> LResult<R> {
    let budget = budget(lua);
    let mut charge = |n: u64| match &budget {
        Some(b) => b.charge(n),
        None => Ok(()),
    };
    let mut m = Matcher::new(src, pat, &mut charge);
    let r = f(&mut m)?;
    m.finish().map_err(stop)?;
    Ok(r)
}

fn stop(e: Stop) -> mlua::Error {
    match e {
        Stop::Pattern(msg) | Stop::Budget(msg) => mlua::Error::runtime(msg),
    }
}

fn push_captures(lua: &Lua, src: &[u8], caps: Vec<Capture>, out: &mut MultiValue) -> LResult<()> {
    for c in caps {
        out.push_back(match c {
            Capture::Str(s, e) => Value::String(lua.create_string(&src[s..e])?),
            Capture::Pos(p) => Value::Integer(p as i64),
        });
    }
    Ok(())
}

fn find_aux(lua: &Lua, args: MultiValue, find: bool) -> LResult<MultiValue> {
    let name = if find { "find" } else { "match" };
    let s = check_string(lua, &args, 1, name)?;
    let p = check_string(lua, &args, 2, name)?;
    let (s, p) = (s.as_bytes(), p.as_bytes());
    let init = pattern::start_offset(opt_integer(lua, &args, 3, name, 1)?, s.len());
    let mut out = MultiValue::new();
    if init > s.len() {
        out.push_back(Value::Nil);
        return Ok(out);
    }
    if find && (truthy(args.get(3)) || pattern::no_specials(&p)) {
        if let Some(at) = pattern::plain_find(&s[init..], &p) {
            let start = init + at;
            out.push_back(Value::Integer(start as i64 + 1));
            out.push_back(Value::Integer((start + p.len()) as i64));
            return Ok(out);
        }
        out.push_back(Value::Nil);
        return Ok(out);
    }
    let (anchor, pat) = match p.strip_prefix(b"^") {
        Some(rest) => (true, rest),
        None => (false, &p[..]),
    };
    let found = with_matcher(lua, &s, pat, |m| {
        let mut s1 = init;
        loop {
            if let Some(e) = m.match_at(s1).map_err(stop)? {
                let caps = if find { m.captures(None) } else { m.captures(Some((s1, e))) }.map_err(stop)?;
                return Ok(Some((s1, e, caps)));
            }
            if s1 >= s.len() || anchor {
                return Ok(None);
            }
            s1 += 1;
        }
    })?;
    match found {
        Some((start, end, caps)) => {
            if find {
                out.push_back(Value::Integer(start as i64 + 1));
                out.push_back(Value::Integer(end as i64));
            }
            push_captures(lua, &s, caps, &mut out)?;
        }
        None => out.push_back(Value::Nil),
    }
    Ok(out)
}

/// `string.gmatch(s, pattern[, init])`: an iterator over the matches.
fn gmatch(lua: &Lua, args: MultiValue) -> LResult<Function> {
    let s = check_string(lua, &args, 1, "gmatch")?;
    let p = check_string(lua, &args, 2, "gmatch")?;
    let len = s.as_bytes().len();
    let mut init = pattern::start_offset(opt_integer(lua, &args, 3, "gmatch", 1)?, len);
    if init > len {
        init = len + 1;
    }
    // (position, end of the last match)
    let state = parking_lot::Mutex::new((init, None::<usize>));
    lua.create_function(move |lua, _: MultiValue| {
        let (src, pat) = (s.as_bytes(), p.as_bytes());
        let (from, last) = *state.lock();
        let found = with_matcher(lua, &src, &pat, |m| {
            let mut at = from;
            while at <= src.len() {
                if let Some(e) = m.match_at(at).map_err(stop)? {
                    if Some(e) != last {
                        return Ok(Some((at, e, m.captures(Some((at, e))).map_err(stop)?)));
                    }
                }
                at += 1;
            }
            Ok(None)
        })?;
        let mut out = MultiValue::new();
        if let Some((_, e, caps)) = found {
            *state.lock() = (e, Some(e));
            push_captures(lua, &src, caps, &mut out)?;
        }
        Ok(out)
    })
}

/// `string.gsub(s, pattern, repl[, n])`.
fn gsub(lua: &Lua, args: MultiValue) -> LResult<(Value, i64)> {
    let subject = check_string(lua, &args, 1, "gsub")?;
    let p = check_string(lua, &args, 2, "gsub")?;
    let repl = args.get(2).cloned().unwrap_or(Value::Nil);
    let repl = match repl {
        Value::String(_) | Value::Table(_) | Value::Function(_) => repl,
        Value::Integer(_) | Value::Number(_) => Value::String(lua.coerce_string(repl)?.expect("numbers convert to strings")),
        other => return arg_error(3, "gsub", format!("string/function/table expected, got {}", other.type_name())),
    };
    let (src, p) = (subject.as_bytes(), p.as_bytes());
    let max = opt_integer(lua, &args, 4, "gsub", src.len() as i64 + 1)?;
    let (anchor, pat) = match p.strip_prefix(b"^") {
        Some(rest) => (true, rest),
        None => (false, &p[..]),
    };
    let limit = lua.app_data_ref::<MemoryLimit>().map_or(64 << 20, |m| m.0);
    let (out, changed, n, at) = with_matcher(lua, &src, pat, |m| {
        let mut out: Vec<u8> = Vec::new();
        let mut changed = false;
        let mut n = 0i64;
        let mut at = 0usize;
        let mut last: Option<usize> = None;
        while n < max {
            match m.match_at(at).map_err(stop)? {
                Some(e) if Some(e) != last => {
                    n += 1;
                    let caps = m.captures(Some((at, e))).map_err(stop)?;
                    let parts = repl_parts(m, &repl, &src, at, e).map_err(stop)?;
                    changed |= add_value(lua, &mut out, &src, at, e, &repl, caps, parts)?;
                    at = e;
                    last = Some(e);
                }
                _ if at < src.len() => {
                    out.push(src[at]);
                    at += 1;
                }
                _ => break,
            }
            if out.len() > limit {
                return Err(mlua::Error::runtime(format!(
                    "gsub: the result would be larger than the state's memory limit ({} MiB)",
                    limit >> 20
                )));
            }
            if anchor {
                break;
            }
        }
        Ok((out, changed, n, at))
    })?;
    if !changed {
        return Ok((Value::String(subject.clone()), n));
    }
    let mut out = out;
    out.extend_from_slice(&src[at..]);
    Ok((Value::String(lua.create_string(&out)?), n))
}

/// A replacement string taken apart: literal bytes and capture references, resolved against
/// the match while the matcher still holds its captures.
enum Part {
    Bytes(Vec<u8>),
    Capture(Capture),
}

fn repl_parts(m: &Matcher<'_>, repl: &Value, src: &[u8], s: usize, e: usize) -> Result<Vec<Part>, Stop> {
    let Value::String(r) = repl else { return Ok(Vec::new()) };
    let r = r.as_bytes();
    let mut parts = Vec::new();
    let mut i = 0;
    while let Some(at) = memchr::memchr(b'%', &r[i..]) {
        let at = i + at;
        parts.push(Part::Bytes(r[i..at].to_vec()));
        let c = r.get(at + 1).copied().unwrap_or(0);
        match c {
            b'%' => parts.push(Part::Bytes(vec![b'%'])),
            b'0' => parts.push(Part::Bytes(src[s..e].to_vec())),
            b'1'..=b'9' => parts.push(Part::Capture(m.capture((c - b'1') as usize, s, e)?)),
            _ => return Err(Stop::Pattern("invalid use of '%' in replacement string".into())),
        }
        i = at + 2;
    }
    parts.push(Part::Bytes(r[i..].to_vec()));
    Ok(parts)
}

#[allow(clippy::too_many_arguments)]
fn add_value(lua: &Lua, out: &mut Vec<u8>, src: &[u8], s: usize, e: usize, repl: &Value, caps: Vec<Capture>, parts: Vec<Part>) -> LResult<bool> {
    let value = match repl {
        Value::String(_) => {
            for part in parts {
                match part {
                    Part::Bytes(b) => out.extend_from_slice(&b),
                    Part::Capture(Capture::Str(a, b)) => out.extend_from_slice(&src[a..b]),
                    Part::Capture(Capture::Pos(p)) => out.extend_from_slice(p.to_string().as_bytes()),
                }
            }
            return Ok(true);
        }
        Value::Function(f) => {
            let mut args = MultiValue::new();
            push_captures(lua, src, caps, &mut args)?;
            f.call::<Value>(args)?
        }
        Value::Table(t) => {
            let mut first = MultiValue::new();
            push_captures(lua, src, caps.into_iter().take(1).collect(), &mut first)?;
            t.get::<Value>(first.pop_front().unwrap_or(Value::Nil))?
        }
        _ => unreachable!("checked by gsub"),
    };
    match value {
        Value::Nil | Value::Boolean(false) => {
            out.extend_from_slice(&src[s..e]);
            Ok(false)
        }
        Value::String(v) => {
            out.extend_from_slice(&v.as_bytes());
            Ok(true)
        }
        v @ (Value::Integer(_) | Value::Number(_)) => {
            let text = lua.coerce_string(v)?.expect("numbers convert to strings");
            out.extend_from_slice(&text.as_bytes());
            Ok(true)
        }
        other => Err(mlua::Error::runtime(format!("invalid replacement value (a {})", other.type_name()))),
    }
}

#[cfg(test)]
mod tests {
    use mlua::{Lua, Table};

    /// Runs `cases` (Lua expressions) in `lua`; each result list as text (errors included).
    fn run(lua: &Lua, cases: &[&str]) -> Vec<String> {
        let show: mlua::Function = lua
            .load(
                r#"
                return function(code)
                    local f = assert(load("return " .. code))
                    local r = table.pack(pcall(f))
                    local out = {}
                    for i = 1, r.n do
                        local v = r[i]
                        if type(v) == "function" then
                            -- gmatch: the first three results of the iterator
                            local parts = {}
                            for _ = 1, 3 do
                                local got = table.pack(v())
                                for j = 1, got.n do parts[#parts + 1] = tostring(got[j]) end
                                parts[#parts + 1] = "/"
                            end
                            v = table.concat(parts, ",")
                        elseif i > 1 and r[1] == false then
                            v = "error" -- messages differ in their prefix only
                        end
                        out[#out + 1] = math.type(v) or type(v) .. ":" .. tostring(v)
                        out[#out] = out[#out] .. "=" .. tostring(v)
                    end
                    return table.concat(out, " ")
                end
                "#,
            )
            .eval()
            .unwrap();
        cases.iter().map(|c| show.call::<String>(*c).unwrap()).collect()
    }

    /// The bounded functions give what C's give, case by case.
    #[test]
    fn same_results_as_the_c_library() {
        let cases = [
            r#"("hello world"):find("o w")"#,
            r#"("hello world"):find("o", 6)"#,
            r#"("hello world"):find("o", -3)"#,
            r#"("hello world"):find("l", 100)"#,
            r#"("hello world"):find("")"#,
            r#"("hello world"):find("", 12)"#,
            r#"("hello world"):find("", 13)"#,
            r#"("a.b"):find(".", 1, true)"#,
            r#"("a+b"):find("+", 1, true)"#,
            r#"("key = value"):match("^(%w+)%s*=%s*(%w+)$")"#,
            r#"("key = value"):find("(%w+)%s*=")"#,
            r#"("hello"):match("()ll()")"#,
            r#"("hello"):match(".-(l+)(.*)")"#,
            r#"("  trim  "):match("^%s*(.-)%s*$")"#,
            r#"("f(a(b)c)d"):match("%b()")"#,
            r#"("THE (quick) fox"):find("%f[%a]%a+", 5)"#,
            r#"("abcabc"):match("(abc)%1")"#,
            r#"("x = 1, y = 22"):gsub("(%w+) = (%w+)", "%2 = %1")"#,
            r#"("hello world"):gsub("o", "0", 1)"#,
            r#"("abc"):gsub("", "-")"#,
            r#"("abc"):gsub("%w", "%0%0")"#,
            r#"("abc"):gsub("%w", "%%")"#,
            r#"("$a $b"):gsub("%$(%w+)", { a = "1", b = 2 })"#,
            r#"("$a $b"):gsub("%$(%w+)", { a = false })"#,
            r#"("abc"):gsub(".", function(c) return c:upper() end)"#,
            r#"("abc"):gsub("(b)", function(c) return nil end)"#,
            r#"("hello"):gsub("l+", 7)"#,
            r#"("abc"):gsub("^a", "x")"#,
            r#"("hello world from lua"):gmatch("%a+")"#,
            r#"("k=v, a=b"):gmatch("(%w+)=(%w+)")"#,
            r#"("abc"):gmatch("")"#,
            r#"("^a^a"):gmatch("^a")"#,
            r#"(12345):find(3)"#,
            r#"("a\0b"):find("\0")"#,
            r#"("a\0b"):find("%z")"#,
            r#"("[x]"):find("[]]")"#,
            r#"("x-y"):find("[a%-z]")"#,
            r#"("ABC def"):find("%u+")"#,
            r#"("ABC def"):find("%U+")"#,
            r#"("a\vb"):find("%s")"#,
            r#"("hello"):find("l", 1.0)"#,
            r#"("hello"):find("(")"#,
            r#"("hello"):find("%")"#,
            r#"("hello"):find("[a")"#,
            r#"("hello"):find("%1")"#,
            r#"("hello"):gsub("l", "%2")"#,
            r#"("hello"):gsub("l", "%x")"#,
            r#"("hello"):gsub("l", true)"#,
            r#"("hello"):find("l", "x")"#,
            r#"("hello"):find()"#,
            r#"("acc-12ab"):match("^acc%-[0-9a-f]+$")"#,
        ];
        let plain = Lua::new();
        let bounded = Lua::new();
        let string: Table = bounded.globals().get("string").unwrap();
        super::install(&bounded, &string).unwrap();
        let want = run(&plain, &cases);
        let got = run(&bounded, &cases);
        assert_eq!(want[0], "boolean:true=true integer=5 integer=7", "the comparison sees the results");
        assert!(want.iter().filter(|w| w.contains("error")).count() >= 8, "errors are compared too: {want:?}");
        for ((case, w), g) in cases.iter().zip(&want).zip(&got) {
            assert_eq!(g, w, "{case}");
        }
    }
}
