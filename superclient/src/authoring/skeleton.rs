//! `superclient new NAME [--dir DIR]`: a working service to start from: `NAME.lua` (it declares
//! itself with `bus:register(NAME, {...})`, counts requests per key in a handler, sends an event
//! back and serves the count), `NAME_test.lua` (passes `superclient test NAME.lua`), the editor
//! stubs of the Lua API (`sequent-api.lua`, LuaLS `---@meta`) and a `.luarc.json` for LuaLS.
//! Existing files are never overwritten.

use sequent_protocol::declaration::validate_service;
use std::path::{Path, PathBuf};

/// The Lua API stubs shipped in `superclient/lua-stubs/`.
pub const STUBS: &str = include_str!("../../lua-stubs/sequent.lua");

const SCRIPT: &str = r#"-- The __NAME__ service. Run it: superclient __NAME__.lua
-- Test it without servers: superclient test __NAME__.lua
-- The Lua API: superclient/README.md; sequent-api.lua lets an editor complete it.

bus:register("__NAME__", {
    -- The event types this service may append; the platform refuses any other.
    appends = { "__TYPE__Requested", "__TYPE__Done" },
})

-- Live handler: runs once per event (sticky per key, effectively once); its state writes and
-- sends commit together when it returns.
bus:add_event_listener("__TYPE__Requested", function(event_type, key, correlation, data, meta)
    local count = redis:incr("count:" .. key)
    log:info("handled " .. event_type .. " for " .. key .. " (" .. count .. " so far)")
    bus:send("__TYPE__Done", key, "any", correlation, { count = count, note = data.note })
end, { rebuild = true })

-- HTTP: ask for work on a key (the event goes through the store), read the count.
bus:add_route("/__NAME__/{key}", "POST", function(method, path, params, body)
    local receipt = bus:send("__TYPE__Requested", params.key, "any", nil, { note = body and body.note })
    return HTTP_ACCEPTED, { id = receipt.id }
end)

bus:add_route("/__NAME__/{key}", "GET", function(method, path, params)
    return HTTP_OK, { key = params.key, count = redis:get("count:" .. params.key) or 0 }
end)
"#;

const TEST: &str = r#"-- Tests of __NAME__.lua: superclient test __NAME__.lua (no servers needed).

test("a request is counted and answered", function()
    given("__TYPE__Requested", "k-1", { note = "first" })
    expect_sent("__TYPE__Done", "k-1", { count = 1, note = "first" })
    expect_state("count:k-1", 1)
    given("__TYPE__Requested", "k-1", {})
    expect_sent("__TYPE__Done", "k-1", { count = 2 })
    expect_nothing_sent()
end)

test("the routes send the request and read the count", function()
    local status = request("POST", "/__NAME__/k-2", { note = "hi" })
    expect_equal(status, 202)
    expect_sent("__TYPE__Requested", "k-2", { note = "hi" })
    expect_sent("__TYPE__Done", "k-2", { count = 1 })
    local _, body = request("GET", "/__NAME__/k-2")
    expect_equal(body, { key = "k-2", count = 1 })
end)
"#;

const LUARC: &str = r#"{
  "$schema": "https://raw.githubusercontent.com/LuaLS/vscode-lua/master/setting/schema.json",
  "runtime.version": "Lua 5.4",
  "workspace.library": ["sequent-api.lua"],
  "diagnostics.globals": []
}
"#;

/// `my-service` → `MyService`: the prefix of the skeleton's event types.
pub fn type_prefix(name: &str) -> String {
    name.split(['-', '_'])
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .collect()
}

/// The files of a new service `name`: (file name, contents).
pub fn files(name: &str) -> Result<Vec<(String, String)>, String> {
    validate_service(name)?;
    let fill = |t: &str| t.replace("__NAME__", name).replace("__TYPE__", &type_prefix(name));
    Ok(vec![
        (format!("{name}.lua"), fill(SCRIPT)),
        (format!("{name}_test.lua"), fill(TEST)),
        ("sequent-api.lua".into(), STUBS.to_string()),
        (".luarc.json".into(), LUARC.to_string()),
    ])
}

/// Writes the files of a new service into `dir` (made if missing); the script and its test
/// must not exist yet, the stubs and `.luarc.json` are left alone if they do. Returns the
/// paths written.
pub fn write(name: &str, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let files = files(name).map_err(|e| anyhow::anyhow!("{e}"))?;
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
    for (file, _) in &files[..2] {
        let path = dir.join(file);
        anyhow::ensure!(!path.exists(), "{} exists already: choose another name or directory (--dir)", path.display());
    }
    let mut written = Vec::new();
    for (file, contents) in files {
        let path = dir.join(&file);
        if path.exists() {
            continue;
        }
        std::fs::write(&path, contents).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_type_prefixes() {
        assert_eq!(type_prefix("loyalty"), "Loyalty");
        assert_eq!(type_prefix("fraud-alerts"), "FraudAlerts");
        assert_eq!(type_prefix("a_b2"), "AB2");
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(files("Bad Name").is_err());
        assert!(files("9lives").is_err());
        let f = files("fraud-alerts").unwrap();
        assert!(f[0].1.contains(r#"bus:register("fraud-alerts""#));
        assert!(f[1].1.contains("FraudAlertsRequested"));
    }
}
