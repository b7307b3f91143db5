//! The web functions of `bus`: `bus:serve_static` (the UI's files), `bus:add_websocket`,
//! `bus:add_live_listener`, `bus:push` and `bus:join` (live updates; see `crate::serve::sockets`).

use super::{args, err, registering, shared, with_call, LResult};
use crate::hub::HubOp;
use crate::script::convert::lua_to_json_text;
use crate::script::handlers::Handlers;
use crate::script::live_topics::LiveTopics;
use crate::script::Mode;
use mlua::{Function, Lua, MultiValue, Table, Value};
use sequent_protocol::validate::validate_type;
use std::path::PathBuf;

/// A tree of static files served for GET/HEAD requests no route matched.
#[derive(Debug, Clone)]
pub struct StaticSpec {
    /// URL prefix, e.g. `/`.
    pub prefix: String,
    pub dir: PathBuf,
    /// File (relative to `dir`) answered for paths that name no file: single-page apps.
    pub fallback: Option<String>,
    /// URL prefixes never served from the tree (e.g. `/api/`): they get the JSON 404.
    pub exclude: Vec<String>,
}

fn string_list(v: Value, what: &str) -> LResult<Vec<String>> {
    match v {
        Value::Nil => Ok(Vec::new()),
        Value::String(s) => Ok(vec![s.to_str()?.to_string()]),
        Value::Table(t) => {
            let mut out = Vec::new();
            for item in t.sequence_values::<String>() {
                out.push(item.map_err(|e| mlua::Error::runtime(format!("{what}: {e}")))?);
            }
            Ok(out)
        }
        other => err(format!("{what}: expected a string or a list of strings, got a {}", other.type_name())),
    }
}

pub fn install(lua: &Lua, bus: &Table) -> LResult<()> {
    bus.raw_set(
        "serve_static",
        lua.create_function(|lua, values: MultiValue| {
            let (prefix, dir, opts): (String, String, Option<Table>) = args(lua, values, "bus:serve_static")?;
            registering(lua, "bus:serve_static")?;
            if !prefix.starts_with('/') {
                return err(format!("bus:serve_static({prefix:?}): the prefix must start with '/'"));
            }
            let mut path = PathBuf::from(&dir);
            if path.is_relative() {
                path = shared(lua).script_dir.join(path);
            }
            let (fallback, exclude) = match opts {
                Some(t) => (t.get::<Option<String>>("fallback")?, string_list(t.get("exclude")?, "bus:serve_static exclude")?),
                None => (None, Vec::new()),
            };
            if !path.is_dir() {
                tracing::warn!(dir = %path.display(), "bus:serve_static: the directory does not exist (yet); requests get a 404 until it does");
            }
            let spec = StaticSpec { prefix, dir: path, fallback, exclude };
            lua.app_data_mut::<Handlers>().expect("installed").statics.push(spec);
            Ok(())
        })?,
    )?;
    bus.raw_set(
        "add_websocket",
        lua.create_function(|lua, values: MultiValue| {
            let (path, f): (String, Function) = args(lua, values, "bus:add_websocket")?;
            registering(lua, "bus:add_websocket")?;
            crate::script::routes::check_pattern(&path).map_err(|e| mlua::Error::runtime(format!("bus:add_websocket: {e}")))?;
            let mut h = lua.app_data_mut::<Handlers>().expect("installed");
            if h.websockets.iter().any(|(p, _)| *p == path) {
                return err(format!("bus:add_websocket: {path} is registered twice"));
            }
            h.websockets.push((path, f));
            Ok(())
        })?,
    )?;
    bus.raw_set(
        "add_live_listener",
        lua.create_function(|lua, values: MultiValue| {
            let (event_type, f, opts): (String, Function, Option<Table>) = args(lua, values, "bus:add_live_listener")?;
            registering(lua, "bus:add_live_listener")?;
            validate_type(&event_type).map_err(|e| mlua::Error::runtime(format!("bus:add_live_listener: {e}")))?;
            let topics = match opts {
                Some(t) => {
                    for pair in t.pairs::<String, Value>() {
                        let (k, _) = pair?;
                        if k != "topics" {
                            return err(format!("bus:add_live_listener({event_type}): unknown option {k:?}; the option is topics"));
                        }
                    }
                    let sources = string_list(t.get("topics")?, "bus:add_live_listener topics")?;
                    Some(LiveTopics::parse(&sources).map_err(|e| mlua::Error::runtime(format!("bus:add_live_listener({event_type}): {e}")))?)
                }
                None => None,
            };
            let mut h = lua.app_data_mut::<Handlers>().expect("installed");
            match topics {
                Some(topics) => h.live_topics.insert(event_type.clone(), topics),
                None => h.live_topics.remove(&event_type),
            };
            h.live.insert(event_type, f);
            Ok(())
        })?,
    )?;
    bus.raw_set(
        "push",
        lua.create_function(|lua, values: MultiValue| {
            let (topics, message): (Value, Value) = args(lua, values, "bus:push")?;
            let topics = string_list(topics, "bus:push topics")?;
            let message = match &message {
                Value::Table(_) => lua_to_json_text(&message).map_err(|e| mlua::Error::runtime(format!("bus:push: {e}")))?,
                Value::String(s) => s.to_str()?.to_string(),
                other => return err(format!("bus:push: the message must be a table (sent as JSON) or a string, not a {}", other.type_name())),
            };
            with_call(lua, "bus:push", |c| match c.mode {
                Mode::Load => err("bus:push: nothing to push to while the script loads"),
                Mode::Rebuild => Ok(()),
                _ => {
                    c.hub_ops.push(HubOp::Push { topics, message });
                    Ok(())
                }
            })
        })?,
    )?;
    bus.raw_set(
        "join",
        lua.create_function(|lua, values: MultiValue| {
            let (topic, new_topic): (String, String) = args(lua, values, "bus:join")?;
            with_call(lua, "bus:join", |c| match c.mode {
                Mode::Load => err("bus:join: nothing to join while the script loads"),
                Mode::Rebuild => Ok(()),
                _ => {
                    c.hub_ops.push(HubOp::Join { topic, new_topic });
                    Ok(())
                }
            })
        })?,
    )?;
    Ok(())
}

