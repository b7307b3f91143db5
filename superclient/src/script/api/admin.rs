//! `admin.services()`, `admin.parked()`, `admin.release(service, key)`: what operators see,
//! only with `--admin-api` (an operators' backend such as the bfaf).

use super::{args, check_reads_allowed, err, infra, shared, LResult};
use crate::script::convert::json_to_lua;
use mlua::{Lua, MultiValue};

fn require_admin(lua: &Lua, what: &str) -> LResult<std::sync::Arc<crate::script::Shared>> {
    let shared = shared(lua);
    if !shared.admin_api {
        return err(format!("{what}: the admin API is off; start the superclient with --admin-api (SEQUENT_ADMIN_API=1)"));
    }
    check_reads_allowed(lua, what)?;
    Ok(shared)
}

pub fn install(lua: &Lua) -> LResult<()> {
    let admin = lua.create_table()?;
    admin.raw_set(
        "services",
        lua.create_async_function(|lua, _: MultiValue| async move {
            let shared = require_admin(&lua, "admin.services")?;
            let (Some((js, stream)), Some(members)) = (shared.js.get(), shared.members.get()) else {
                return infra(&lua, "admin.services", "not connected to NATS yet");
            };
            shared.directory.ensure_started(members).await;
            match shared.directory.services(js, stream).await {
                Ok(v) => json_to_lua(&lua, &v),
                Err(e) => infra(&lua, "admin.services", e),
            }
        })?,
    )?;
    admin.raw_set(
        "parked",
        lua.create_async_function(|lua, _: MultiValue| async move {
            let shared = require_admin(&lua, "admin.parked")?;
            let Some(members) = shared.members.get() else { return infra(&lua, "admin.parked", "not connected to NATS yet") };
            shared.directory.ensure_started(members).await;
            let Some(store) = shared.redis.get() else { return infra(&lua, "admin.parked", "redis is not connected yet") };
            match crate::state::parked::all(store, &shared.directory.service_names()).await {
                Ok(v) => json_to_lua(&lua, &v),
                Err(e) => infra(&lua, "admin.parked", e),
            }
        })?,
    )?;
    admin.raw_set(
        "release",
        lua.create_async_function(|lua, values: MultiValue| async move {
            let (service, key): (String, String) = args(&lua, values, "admin.release")?;
            let shared = require_admin(&lua, "admin.release")?;
            let Some(store) = shared.redis.get() else { return infra(&lua, "admin.release", "redis is not connected yet") };
            match crate::state::parked::request_release(store, &service, &key).await {
                Ok(found) => Ok(found),
                Err(e) => infra(&lua, "admin.release", e),
            }
        })?,
    )?;
    lua.globals().raw_set("admin", admin)
}

