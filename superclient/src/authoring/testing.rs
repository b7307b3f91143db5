//! `superclient test SCRIPT [TESTFILE]`: runs a test file against a service script without any
//! server ([`Session`]: state and stream in memory). The test file is Lua (its own state, the
//! full standard library) with these globals (superclient/README.md, "Testing a script"):
//!
//! | | |
//! |---|---|
//! | `test(name, fn)` | a test; each starts from an empty state and stream |
//! | `given(type, key, data[, {id, correlation, from}])` → event | an event from outside, then every handler run it causes |
//! | `given_state(key, value)` | sets a key of the service's state (as a string of JSON) |
//! | `request(method, path[, body[, {query, headers}]])` → status, body | calls a route, commits, delivers its sends |
//! | `expect_sent(type[, key[, data]])` → event | the first send not matched yet of that type (and key, and fields) |
//! | `expect_nothing_sent()` | every send was matched |
//! | `expect_state(key, value)`, `state(key)`, `dump_state()` | the service's state (`nil`: no such key) |
//! | `expect_equal(actual, expected[, message])` | values compare as `matching` says |
//! | `sent([type])`, `events()` | the service's sends, the whole stream |
//! | `json.encode/decode` | as in scripts |

use super::matching;
use super::session::{outside_event, Session};
use crate::script::convert::{event_table, json_to_lua, lua_to_json};
use mlua::{Function, Lua, MultiValue, Table, Value};
use parking_lot::Mutex;
use sequent_protocol::Event;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The running test's service and what the test has matched of its sends.
struct Harness {
    script: PathBuf,
    source: String,
    session: tokio::sync::Mutex<Session>,
    /// Sequences of the sends `expect_sent` matched.
    matched: Mutex<HashSet<u64>>,
    tests: Mutex<Vec<(String, Function)>>,
}

impl Harness {
    async fn reset(&self) -> anyhow::Result<()> {
        *self.session.lock().await = Session::load(&self.script, &self.source)?;
        self.matched.lock().clear();
        Ok(())
    }
}

/// Wraps the API so that a failed expectation is an error at the test's line (`error(m, 2)`).
const PRELUDE: &str = r#"
local raw = sequent_test
sequent_test = nil
local function checked(name)
  return function(...)
    local r = table.pack(raw[name](...))
    if not r[1] then error(r[2], 2) end
    return table.unpack(r, 2, r.n)
  end
end
for _, name in ipairs({"given", "given_state", "request", "expect_sent", "expect_nothing_sent", "expect_state", "expect_equal"}) do
  _G[name] = checked(name)
end
test, state, dump_state, sent, events = raw.test, raw.state, raw.dump_state, raw.sent, raw.events
"#;

/// The default test file of `script`: `NAME_test.lua` next to `NAME.lua`.
pub fn default_test_file(script: &Path) -> PathBuf {
    let stem = script.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    script.with_file_name(format!("{stem}_test.lua"))
}

/// Runs the tests of `test_file` (default: [`default_test_file`]) against `script` and prints
/// one line per test. Ok(true) when every test passed.
pub async fn run(script: &Path, test_file: Option<&Path>) -> anyhow::Result<bool> {
    use anyhow::Context as _;
    let test_file = test_file.map(Path::to_path_buf).unwrap_or_else(|| default_test_file(script));
    let source = std::fs::read_to_string(script).with_context(|| format!("reading the script {}", script.display()))?;
    let tests_source = std::fs::read_to_string(&test_file)
        .with_context(|| format!("reading the test file {} (give it as the second argument, or create it: superclient new writes one)", test_file.display()))?;
    let harness = Arc::new(Harness {
        script: script.to_path_buf(),
        session: tokio::sync::Mutex::new(Session::load(script, &source)?),
        source,
        matched: Mutex::new(HashSet::new()),
        tests: Mutex::new(Vec::new()),
    });
    let lua = Lua::new();
    install(&lua, &harness).map_err(|e| anyhow::anyhow!("installing the test API: {e}"))?;
    lua.load(PRELUDE).set_name("=prelude").exec().map_err(|e| anyhow::anyhow!("{e}"))?;
    let name = test_file.file_name().map_or_else(|| test_file.display().to_string(), |n| n.to_string_lossy().into_owned());
    println!("{name} against {}", script.display());
    if let Err(e) = lua.load(tests_source.as_str()).set_name(format!("@{name}")).exec_async().await {
        println!("  FAIL  (loading the test file) {}", first_lines(&e));
        return Ok(false);
    }
    let tests: Vec<(String, Function)> = std::mem::take(&mut *harness.tests.lock());
    if tests.is_empty() {
        println!("  ok    (the file's top level; it declares no test(name, fn))");
        return Ok(true);
    }
    let (mut passed, mut failed) = (0, 0);
    for (test_name, f) in tests {
        harness.reset().await?;
        match f.call_async::<()>(()).await {
            Ok(()) => {
                passed += 1;
                println!("  ok    {test_name}");
            }
            Err(e) => {
                failed += 1;
                println!("  FAIL  {test_name}\n        {}", first_lines(&e).replace('\n', "\n        "));
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(failed == 0)
}

/// An error without mlua's wrapping and Lua's traceback.
fn first_lines(e: &mlua::Error) -> String {
    let mut e = e;
    while let mlua::Error::CallbackError { cause, .. } = e {
        e = cause;
    }
    let text = match e {
        mlua::Error::RuntimeError(m) => m.clone(),
        other => other.to_string(),
    };
    text.split("\nstack traceback:").next().unwrap_or_default().trim().to_string()
}

/// `(true, values...)` or `(false, message)`: the prelude turns the latter into an error at the
/// caller's line.
fn answer(lua: &Lua, r: Result<MultiValue, String>) -> mlua::Result<MultiValue> {
    match r {
        Ok(mut values) => {
            values.push_front(Value::Boolean(true));
            Ok(values)
        }
        Err(m) => Ok(MultiValue::from_iter([Value::Boolean(false), Value::String(lua.create_string(m)?)])),
    }
}

fn to_json(v: &Value) -> Result<serde_json::Value, String> {
    match v {
        Value::Nil => Ok(serde_json::Value::Null),
        v => lua_to_json(v),
    }
}

fn show(v: &serde_json::Value) -> String {
    let s = v.to_string();
    if s.len() > 300 { format!("{}...", &s[..s.floor_char_boundary(300)]) } else { s }
}

fn describe(e: &Event) -> String {
    format!("{} on {} {}", e.event_type, e.key, e.data.get())
}

fn events_table(lua: &Lua, events: &[Event]) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    for e in events {
        t.raw_push(event_table(lua, e)?)?;
    }
    Ok(t)
}

fn install(lua: &Lua, harness: &Arc<Harness>) -> mlua::Result<()> {
    let api = lua.create_table()?;
    let h = harness.clone();
    api.raw_set(
        "test",
        lua.create_function(move |_, (name, f): (String, Function)| {
            h.tests.lock().push((name, f));
            Ok(())
        })?,
    )?;
    let h = harness.clone();
    api.raw_set(
        "given",
        lua.create_async_function(move |lua, (event_type, key, data, opts): (String, String, Value, Option<Table>)| {
            let h = h.clone();
            async move {
                let r = async {
                    let data = to_json(&data)?;
                    let opt = |name: &str| opts.as_ref().and_then(|o| o.get::<Option<String>>(name).ok().flatten());
                    let event = outside_event(&event_type, &key, &data, opt("id"), opt("correlation"))?;
                    let from = opt("from").unwrap_or_else(|| "test".into());
                    let stored = h.session.lock().await.given(event, &from).await?;
                    Ok(MultiValue::from_iter([Value::Table(event_table(&lua, &stored).map_err(|e| e.to_string())?)]))
                }
                .await;
                answer(&lua, r)
            }
        })?,
    )?;
    let h = harness.clone();
    api.raw_set(
        "request",
        lua.create_async_function(move |lua, (method, path, body, opts): (String, String, Value, Option<Table>)| {
            let h = h.clone();
            async move {
                let r = async {
                    let body = match body {
                        Value::Nil => None,
                        b => Some(to_json(&b)?),
                    };
                    let pairs = |name: &str| -> Vec<(String, String)> {
                        opts.as_ref()
                            .and_then(|o| o.get::<Option<Table>>(name).ok().flatten())
                            .map(|t| t.pairs::<String, String>().filter_map(Result::ok).collect())
                            .unwrap_or_default()
                    };
                    let answer = h.session.lock().await.request(&method, &path, body, pairs("query"), pairs("headers")).await?;
                    let body = json_to_lua(&lua, &answer.body).map_err(|e| e.to_string())?;
                    Ok(MultiValue::from_iter([Value::Integer(i64::from(answer.status)), body]))
                }
                .await;
                answer(&lua, r)
            }
        })?,
    )?;
    let h = harness.clone();
    api.raw_set(
        "expect_sent",
        lua.create_async_function(move |lua, (event_type, key, data): (String, Option<String>, Value)| {
            let h = h.clone();
            async move {
                let sent = h.session.lock().await.sent();
                let r = (|| {
                    let want = to_json(&data)?;
                    let mut matched = h.matched.lock();
                    let open: Vec<&Event> = sent.iter().filter(|e| !matched.contains(&e.seq)).collect();
                    let hit = open.iter().find(|e| {
                        e.event_type == event_type
                            && key.as_ref().is_none_or(|k| *k == e.key)
                            && (want.is_null() || serde_json::from_str(e.data.get()).is_ok_and(|d: serde_json::Value| matching::contains(&d, &want)))
                    });
                    match hit {
                        Some(e) => {
                            matched.insert(e.seq);
                            Ok(MultiValue::from_iter([Value::Table(event_table(&lua, e).map_err(|e| e.to_string())?)]))
                        }
                        None => Err(format!(
                            "expected the service to send {event_type}{}{}; it sent {}",
                            key.as_ref().map(|k| format!(" on {k}")).unwrap_or_default(),
                            if want.is_null() { String::new() } else { format!(" with {}", show(&want)) },
                            if open.is_empty() { "nothing (else)".to_string() } else { open.iter().map(|e| describe(e)).collect::<Vec<_>>().join("; ") }
                        )),
                    }
                })();
                answer(&lua, r)
            }
        })?,
    )?;
    let h = harness.clone();
    api.raw_set(
        "expect_nothing_sent",
        lua.create_async_function(move |lua, ()| {
            let h = h.clone();
            async move {
                let sent = h.session.lock().await.sent();
                let matched = h.matched.lock().clone();
                let open: Vec<String> = sent.iter().filter(|e| !matched.contains(&e.seq)).map(describe).collect();
                let r = if open.is_empty() { Ok(MultiValue::new()) } else { Err(format!("expected no (further) sends; the service sent {}", open.join("; "))) };
                answer(&lua, r)
            }
        })?,
    )?;
    let h = harness.clone();
    api.raw_set(
        "state",
        lua.create_async_function(move |lua, key: String| {
            let h = h.clone();
            async move {
                let v = h.session.lock().await.state(&key);
                v.map_or(Ok(Value::Nil), |v| json_to_lua(&lua, &v))
            }
        })?,
    )?;
    let h = harness.clone();
    api.raw_set(
        "dump_state",
        lua.create_async_function(move |lua, ()| {
            let h = h.clone();
            async move {
                let v = h.session.lock().await.dump();
                json_to_lua(&lua, &serde_json::Value::Object(v))
            }
        })?,
    )?;
    let h = harness.clone();
    api.raw_set(
        "given_state",
        lua.create_async_function(move |lua, (key, value): (String, Value)| {
            let h = h.clone();
            async move {
                let r = match to_json(&value) {
                    Ok(v) => h.session.lock().await.set_state(&key, &v).map(|()| MultiValue::new()),
                    Err(e) => Err(e),
                };
                answer(&lua, r)
            }
        })?,
    )?;
    let h = harness.clone();
    api.raw_set(
        "expect_state",
        lua.create_async_function(move |lua, (key, expected): (String, Value)| {
            let h = h.clone();
            async move {
                let actual = h.session.lock().await.state(&key);
                let r = to_json(&expected).and_then(|want| match (&actual, want.is_null()) {
                    (None, true) => Ok(MultiValue::new()),
                    (None, false) => Err(format!("expected state {key:?} to be {}; there is no such key", show(&want))),
                    (Some(a), _) if matching::equal(a, &want) => Ok(MultiValue::new()),
                    (Some(a), _) => Err(format!("expected state {key:?} to be {}; it is {}", show(&want), show(a))),
                });
                answer(&lua, r)
            }
        })?,
    )?;
    api.raw_set(
        "expect_equal",
        lua.create_function(|lua, (actual, expected, message): (Value, Value, Option<String>)| {
            let r = to_json(&actual).and_then(|a| {
                let e = to_json(&expected)?;
                match matching::equal(&a, &e) {
                    true => Ok(MultiValue::new()),
                    false => Err(format!("{}expected {}, got {}", message.map(|m| format!("{m}: ")).unwrap_or_default(), show(&e), show(&a))),
                }
            });
            answer(lua, r)
        })?,
    )?;
    let h = harness.clone();
    api.raw_set(
        "sent",
        lua.create_async_function(move |lua, event_type: Option<String>| {
            let h = h.clone();
            async move {
                let sent: Vec<Event> = h.session.lock().await.sent().into_iter().filter(|e| event_type.as_ref().is_none_or(|t| *t == e.event_type)).collect();
                events_table(&lua, &sent)
            }
        })?,
    )?;
    let h = harness.clone();
    api.raw_set(
        "events",
        lua.create_async_function(move |lua, ()| {
            let h = h.clone();
            async move {
                let all = h.session.lock().await.offline.log.lock().events().to_vec();
                events_table(&lua, &all)
            }
        })?,
    )?;
    let json = lua.create_table()?;
    json.raw_set("encode", lua.create_function(|_, v: Value| to_json(&v).map(|j| j.to_string()).map_err(mlua::Error::runtime))?)?;
    json.raw_set(
        "decode",
        lua.create_function(|lua, s: String| {
            let v: serde_json::Value = serde_json::from_str(&s).map_err(|e| mlua::Error::runtime(format!("json.decode: {e}")))?;
            json_to_lua(lua, &v)
        })?,
    )?;
    lua.globals().raw_set("json", json)?;
    lua.globals().raw_set("sequent_test", api)
}
