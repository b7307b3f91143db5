//! Writing services: `superclient new` ([`skeleton`]: a service to start from, with its test and
//! the editor stubs of the Lua API) and `superclient test` ([`testing`]: a script's handlers and
//! routes run without servers by a [`session`], its assertions compared as [`matching`] says).

pub mod matching;
pub mod session;
pub mod skeleton;
pub mod testing;

#[cfg(test)]
mod tests {
    use crate::script::{Engine, Limits, Secrets, Shared};
    use std::sync::Arc;

    /// Every function and `HTTP_*` constant of the Lua API has a stub in `lua-stubs/sequent.lua`.
    #[test]
    fn the_stubs_cover_the_whole_api() {
        let shared = Arc::new(Shared::new("i".into(), std::path::Path::new("x.lua"), Secrets::from_env(true).unwrap(), true, std::time::Duration::from_secs(1), Default::default()));
        let limits = Limits { memory_bytes: 16 << 20, instructions: 1_000_000, timeout: std::time::Duration::from_secs(1) };
        let (engine, _) = Engine::load(r#"bus:register("x") bus:add_route("/", "GET", function() return 200 end)"#, shared, limits).unwrap();
        let globals = engine.lua().globals();
        let mut missing = Vec::new();
        for module in ["bus", "redis", "log", "json", "http", "crypto", "admin"] {
            let t: mlua::Table = globals.get(module).unwrap();
            for pair in t.pairs::<String, mlua::Value>() {
                let (name, value) = pair.unwrap();
                if name.starts_with("__") || !matches!(value, mlua::Value::Function(_)) {
                    continue;
                }
                let documented = [format!("function {module}:{name}("), format!("function {module}.{name}(")];
                if !documented.iter().any(|d| super::skeleton::STUBS.contains(d.as_str())) {
                    missing.push(format!("{module}.{name}"));
                }
            }
        }
        for pair in globals.pairs::<String, mlua::Value>() {
            let (name, _) = pair.unwrap();
            if name.starts_with("HTTP_") && !super::skeleton::STUBS.contains(&format!("{name} = ")) {
                missing.push(name);
            }
        }
        assert!(missing.is_empty(), "no stub in lua-stubs/sequent.lua for {missing:?}");
        mlua::Lua::new().load(super::skeleton::STUBS).set_name("=sequent.lua").exec().expect("the stubs are valid Lua");
    }
}
