//! Conversions between JSON, events, receipts and Lua values.

use mlua::{Lua, LuaSerdeExt, Table, Value};
use sequent_protocol::{Event, Receipt};

pub fn json_to_lua(lua: &Lua, value: &serde_json::Value) -> mlua::Result<Value> {
    let options = mlua::serde::SerializeOptions::new().serialize_none_to_null(false).serialize_unit_to_null(false);
    lua.to_value_with(value, options)
}

/// A Lua value as serde sees it: tables with sorted keys, no functions or userdata, no cycles.
fn serializable(value: &Value) -> mlua::SerializableValue<'_> {
    value.to_serializable().sort_keys(true).deny_unsupported_types(true).deny_recursive_tables(true)
}

fn unwritable(e: serde_json::Error) -> String {
    format!("the value cannot be written as JSON: {e}")
}

pub fn lua_to_json(value: &Value) -> Result<serde_json::Value, String> {
    serde_json::to_value(serializable(value)).map_err(unwritable)
}

/// [`lua_to_json`] as text, written straight from the Lua value (no `serde_json::Value`
/// between): what `redis:set` stores, `json.encode` returns, `log:*` writes.
pub fn lua_to_json_text(value: &Value) -> Result<String, String> {
    serde_json::to_string(&serializable(value)).map_err(unwritable)
}

/// An event as the Lua table scripts see from `bus:last_event` and `bus:events_after`.
pub fn event_table(lua: &Lua, event: &Event) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.raw_set("id", event.id.as_str())?;
    t.raw_set("type", event.event_type.as_str())?;
    t.raw_set("key", event.key.as_str())?;
    t.raw_set("version", event.version)?;
    t.raw_set("seq", event.seq)?;
    t.raw_set("time", event.time.as_str())?;
    t.raw_set("correlation", event.correlation.as_str())?;
    t.raw_set("causation", event.causation.as_deref())?;
    t.raw_set("producer", event.producer.service.as_str())?;
    t.raw_set("data", data_to_lua(lua, event.data.get())?)?;
    Ok(t)
}

/// How an event reaches its handler: the `meta` fields beyond the event's own.
#[derive(Debug, Clone, Copy, Default)]
pub struct Delivery {
    pub partition: Option<u32>,
    /// The delivery count of a live event.
    pub attempt: Option<i64>,
    pub rebuild: bool,
    /// Processed again after an operator released its parked key.
    pub released: bool,
    /// The event may have been handled before (and its sends stored): a redelivery, an event
    /// the partition's previous owner had received, a re-run after a failed commit.
    pub redelivered: bool,
}

/// The handler's arguments: `(event_type, key, correlation, data, meta)`.
pub fn handler_args(lua: &Lua, event: &Event, delivery: Delivery) -> mlua::Result<(String, String, String, Value, Table)> {
    let data = data_to_lua(lua, event.data.get())?;
    let meta = meta_table(lua, event, delivery)?;
    Ok((event.event_type.clone(), event.key.clone(), event.correlation.clone(), data, meta))
}

/// The handler's `meta` argument.
pub fn meta_table(lua: &Lua, event: &Event, delivery: Delivery) -> mlua::Result<Table> {
    let meta = lua.create_table_with_capacity(0, 12)?;
    meta.raw_set("id", event.id.as_str())?;
    meta.raw_set("seq", event.seq)?;
    meta.raw_set("version", event.version)?;
    meta.raw_set("time", event.time.as_str())?;
    meta.raw_set("correlation", event.correlation.as_str())?;
    meta.raw_set("causation", event.causation.as_deref())?;
    meta.raw_set("producer", event.producer.service.as_str())?;
    meta.raw_set("producer_instance", event.producer.instance.as_deref())?;
    if let Some(p) = delivery.partition {
        meta.raw_set("partition", p)?;
    }
    if let Some(a) = delivery.attempt {
        meta.raw_set("attempt", a)?;
    }
    if delivery.rebuild {
        meta.raw_set("rebuild", true)?;
    }
    if delivery.released {
        meta.raw_set("released", true)?;
    }
    meta.raw_set("redelivered", delivery.redelivered || delivery.released)?;
    Ok(meta)
}

/// JSON text (an event's data) straight into Lua values, without a `serde_json::Value` between.
pub fn data_to_lua(lua: &Lua, json: &str) -> mlua::Result<Value> {
    let mut de = serde_json::Deserializer::from_str(json);
    let options = mlua::serde::SerializeOptions::new().serialize_none_to_null(false).serialize_unit_to_null(false);
    let value = lua.to_value_with(&serde_transcode::Transcoder::new(&mut de), options)?;
    de.end().map_err(mlua::Error::external)?;
    Ok(value)
}

/// A stored state value into Lua: its JSON, or the text itself when it is not JSON (written by
/// something else than a script), as `state::decode` reads it.
pub fn stored_to_lua(lua: &Lua, text: &str) -> mlua::Result<Value> {
    match data_to_lua(lua, text) {
        Ok(value) => Ok(value),
        Err(_) => lua.create_string(text).map(Value::String),
    }
}

/// The status a receipt listener is called with: `ok`, `conflict`, `aborted` or `invalid`; for a
/// script written for the original system ([`speaks_original_statuses`]) `success` for a stored
/// event and `inconsistent` for one that was not stored (a conflict, or aborted with the
/// conflicting event of its batch: the original's scripts resend both).
pub fn receipt_status(receipt: &Receipt, original: bool) -> &'static str {
    match (receipt, original) {
        (Receipt::Stored { .. }, false) => "ok",
        (Receipt::Stored { .. }, true) => "success",
        (Receipt::Conflict { .. }, false) => "conflict",
        (Receipt::Aborted { .. }, false) => "aborted",
        (Receipt::Conflict { .. } | Receipt::Aborted { .. }, true) => "inconsistent",
        (Receipt::Invalid { .. }, _) => "invalid",
    }
}

/// Whether a script compares receipt statuses with the original system's names: its code (not
/// its comments) holds the string literal `inconsistent`, which no status of this runtime equals.
pub fn speaks_original_statuses(source: &str) -> bool {
    string_literals(source).iter().any(|s| s == "inconsistent")
}

/// The string literals of Lua source (quoted or long brackets), comments skipped. Escapes are
/// kept as written: enough to recognise plain words.
fn string_literals(source: &str) -> Vec<String> {
    let b = source.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    // `[==[` at `at`: its level (number of `=`), if it opens a long bracket.
    let long_open = |at: usize| -> Option<usize> {
        let level = b.get(at + 1..)?.iter().take_while(|c| **c == b'=').count();
        (b.get(at) == Some(&b'[') && b.get(at + 1 + level) == Some(&b'[')).then_some(level)
    };
    let long_body = |from: usize, level: usize| -> (usize, usize) {
        let close = format!("]{}]", "=".repeat(level));
        match source[from..].find(&close) {
            Some(n) => (from + n, from + n + close.len()),
            None => (b.len(), b.len()),
        }
    };
    while i < b.len() {
        match b[i] {
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i += 2;
                match long_open(i) {
                    Some(level) => i = long_body(i + level + 2, level).1,
                    None => i = source[i..].find('\n').map_or(b.len(), |n| i + n),
                }
            }
            q @ (b'"' | b'\'') => {
                let start = i + 1;
                i = start;
                while i < b.len() && b[i] != q && b[i] != b'\n' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                out.push(source[start..i.min(b.len())].to_string());
                i += 1;
            }
            b'[' => match long_open(i) {
                Some(level) => {
                    let (end, next) = long_body(i + level + 2, level);
                    out.push(source[i + level + 2..end].to_string());
                    i = next;
                }
                None => i += 1,
            },
            _ => i += 1,
        }
    }
    out
}

pub fn receipt_table(lua: &Lua, receipt: &Receipt) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    match receipt {
        Receipt::Stored { id, key, seq, version, duplicate } => {
            t.raw_set("status", "ok")?;
            t.raw_set("id", id.as_str())?;
            t.raw_set("key", key.as_str())?;
            t.raw_set("seq", *seq)?;
            t.raw_set("version", *version)?;
            t.raw_set("duplicate", *duplicate)?;
        }
        Receipt::Conflict { id, key, expected, current_version, next_version } => {
            t.raw_set("status", "conflict")?;
            t.raw_set("id", id.as_str())?;
            t.raw_set("key", key.as_str())?;
            t.raw_set("expected", *expected)?;
            t.raw_set("current_version", *current_version)?;
            t.raw_set("next_version", *next_version)?;
        }
        Receipt::Invalid { index, reason } => {
            t.raw_set("status", "invalid")?;
            t.raw_set("index", *index)?;
            t.raw_set("reason", reason.as_str())?;
        }
        Receipt::Aborted { id, key } => {
            t.raw_set("status", "aborted")?;
            t.raw_set("id", id.as_str())?;
            t.raw_set("key", key.as_str())?;
        }
    }
    Ok(t)
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_scripts_get_the_original_statuses() {
        assert!(speaks_original_statuses(r#"if status == "inconsistent" then"#));
        assert!(speaks_original_statuses("if status == 'inconsistent' then"));
        assert!(!speaks_original_statuses(r#"if status == "conflict" then -- not inconsistent"#));
        assert!(!speaks_original_statuses("-- the status is \"conflict\" (was \"inconsistent\")\nif status == \"conflict\" then end"));
        assert!(!speaks_original_statuses("--[==[ \"inconsistent\" ]==] x = [[inconsistent ]]"));
        assert!(speaks_original_statuses("x = [[ -- ]] if s == [=[inconsistent]=] then end"));
        assert!(!speaks_original_statuses(r#"x = "a \" inconsistent""#));
        let conflict = Receipt::Conflict { id: "e".into(), key: "k".into(), expected: 3, current_version: Some(4), next_version: 5 };
        let aborted = Receipt::Aborted { id: "e".into(), key: "k".into() };
        let stored = Receipt::Stored { id: "e".into(), key: "k".into(), seq: 9, version: 0, duplicate: false };
        assert_eq!(receipt_status(&conflict, false), "conflict");
        assert_eq!(receipt_status(&aborted, false), "aborted");
        assert_eq!(receipt_status(&stored, false), "ok");
        assert_eq!(receipt_status(&conflict, true), "inconsistent");
        assert_eq!(receipt_status(&aborted, true), "inconsistent");
        assert_eq!(receipt_status(&stored, true), "success");
    }
}
