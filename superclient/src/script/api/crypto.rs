//! `crypto.*`: what a users service needs to keep passwords and sessions.
//!
//! - `crypto.hash_password(pw)` → `peppered:` + an Argon2id PHC string (keyed with the pepper);
//!   `crypto.verify_password(pw, hash)` → bool.
//! - `crypto.random_hex(nbytes)`, `crypto.uuid()`, `crypto.sha256_hex(s)`: random ids (OS
//!   randomness), a UUID v7, a digest;
//! - `crypto.token(subject, ttl_seconds, claims?)` → a signed, expiring token
//!   `base64url(json).base64url(hmac_sha256)`, json = `{sub, exp, ...claims}`;
//!   `crypto.verify_token(token)` → the claims table, or `nil, reason`.
//!
//! The signing key comes from `SEQUENT_TOKEN_SECRET`, the password pepper from
//! `SEQUENT_PASSWORD_PEPPER` (each at least 32 bytes). Without them, fixed development values
//! are used, and only while the HTTP listener is on loopback; see [`Secrets::from_env`].
//!
//! Why a pepper: a users service keeps the hash in its events (the state must be rebuildable
//! from the stream), and analysts may read the stream. Hashes made with the pepper (Argon2's
//! secret input, marked `peppered:` in front of the PHC string) cannot be attacked offline
//! without it. Hashes without the mark (made before the pepper existed) still verify. The
//! pepper must not change: every password hashed with it would stop verifying.

use super::{args, err};
use crate::script::convert::{json_to_lua, lua_to_json};
use crate::script::Shared;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use mlua::{Lua, MultiValue, Table, Value};
use sha2::Sha256;
use std::sync::Arc;

/// The development signing key: public, so tokens signed with it protect nothing.
pub const DEV_TOKEN_SECRET: &str = "sequent-DEVELOPMENT-ONLY-token-secret-do-not-use-in-production";
/// The development pepper: public, so hashes made with it are only as safe as without one.
pub const DEV_PASSWORD_PEPPER: &str = "sequent-DEVELOPMENT-ONLY-password-pepper-do-not-use-in-production";
/// Marks a hash made with the pepper.
const PEPPERED: &str = "peppered:";

/// The secrets of the `crypto.*` functions; None: the functions that need it raise an error.
#[derive(Clone, Default)]
pub struct Secrets {
    pub token: Option<Vec<u8>>,
    pub pepper: Option<Vec<u8>>,
}

impl Secrets {
    /// `SEQUENT_TOKEN_SECRET` and `SEQUENT_PASSWORD_PEPPER`, or the development values when the
    /// service only listens on loopback.
    pub fn from_env(loopback: bool) -> anyhow::Result<Secrets> {
        Ok(Secrets {
            token: secret_from_env("SEQUENT_TOKEN_SECRET", DEV_TOKEN_SECRET, "tokens are signed with", loopback)?,
            pepper: secret_from_env("SEQUENT_PASSWORD_PEPPER", DEV_PASSWORD_PEPPER, "passwords are hashed with", loopback)?,
        })
    }
}

fn secret_from_env(name: &str, dev: &str, what: &str, loopback: bool) -> anyhow::Result<Option<Vec<u8>>> {
    match std::env::var(name) {
        Ok(s) if s.len() >= 32 => Ok(Some(s.into_bytes())),
        Ok(_) => anyhow::bail!("{name} is shorter than 32 bytes; use a long random value"),
        Err(_) if loopback => {
            tracing::warn!("{name} is not set: {what} the public development value (loopback only)");
            Ok(Some(dev.as_bytes().to_vec()))
        }
        Err(_) => Ok(None),
    }
}

fn strip(mut values: MultiValue) -> MultiValue {
    if matches!(values.front(), Some(Value::Table(_))) {
        values.pop_front();
    }
    values
}

/// One of the instance's secrets (`pick`), or an error naming its variable (`name`).
fn required(lua: &Lua, name: &str, pick: fn(&Secrets) -> &Option<Vec<u8>>) -> mlua::Result<Vec<u8>> {
    let shared = lua.app_data_ref::<Arc<Shared>>().expect("installed").clone();
    pick(&shared.secrets)
        .clone()
        .ok_or_else(|| mlua::Error::runtime(format!("crypto: {name} is not set (required when the service listens beyond loopback)")))
}

fn secret(lua: &Lua) -> mlua::Result<Vec<u8>> {
    required(lua, "SEQUENT_TOKEN_SECRET", |s| &s.token)
}

fn pepper(lua: &Lua) -> mlua::Result<Vec<u8>> {
    required(lua, "SEQUENT_PASSWORD_PEPPER", |s| &s.pepper)
}

/// Argon2id with the default parameters, keyed with `pepper` when given.
fn argon2(pepper: Option<&[u8]>) -> Result<argon2::Argon2<'_>, argon2::Error> {
    match pepper {
        Some(p) => argon2::Argon2::new_with_secret(p, argon2::Algorithm::Argon2id, argon2::Version::V0x13, argon2::Params::default()),
        None => Ok(argon2::Argon2::default()),
    }
}

fn sign(secret: &[u8], payload: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(payload.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

pub fn install(lua: &Lua) -> mlua::Result<()> {
    let crypto = lua.create_table()?;
    crypto.raw_set(
        "hash_password",
        lua.create_async_function(|lua, values: MultiValue| async move {
            let (password,): (String,) = mlua::FromLuaMulti::from_lua_multi(strip(values), &lua)?;
            if password.is_empty() {
                return Err(mlua::Error::runtime("crypto.hash_password: the password is empty"));
            }
            let pepper = pepper(&lua)?;
            // Argon2 is deliberately slow: keep it off the async workers.
            tokio::task::spawn_blocking(move || {
                use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
                let salt = SaltString::generate(&mut OsRng);
                let hasher = argon2(Some(&pepper)).map_err(argon2::password_hash::Error::from)?;
                hasher.hash_password(password.as_bytes(), &salt).map(|h| format!("{PEPPERED}{h}"))
            })
            .await
            .map_err(|e| mlua::Error::runtime(format!("crypto.hash_password: {e}")))?
            .map_err(|e| mlua::Error::runtime(format!("crypto.hash_password: {e}")))
        })?,
    )?;
    crypto.raw_set(
        "verify_password",
        lua.create_async_function(|lua, values: MultiValue| async move {
            let (password, hash): (String, String) = mlua::FromLuaMulti::from_lua_multi(strip(values), &lua)?;
            let (pepper, phc) = match hash.strip_prefix(PEPPERED) {
                Some(phc) => (Some(pepper(&lua)?), phc.to_string()),
                None => (None, hash),
            };
            tokio::task::spawn_blocking(move || {
                use argon2::password_hash::{PasswordHash, PasswordVerifier};
                match (PasswordHash::new(&phc), argon2(pepper.as_deref())) {
                    (Ok(parsed), Ok(verifier)) => verifier.verify_password(password.as_bytes(), &parsed).is_ok(),
                    _ => false,
                }
            })
            .await
            .map_err(|e| mlua::Error::runtime(format!("crypto.verify_password: {e}")))
        })?,
    )?;
    crypto.raw_set(
        "token",
        lua.create_function(|lua, values: MultiValue| {
            let (subject, ttl, claims): (String, i64, Option<Table>) = mlua::FromLuaMulti::from_lua_multi(strip(values), lua)?;
            if ttl <= 0 {
                return Err(mlua::Error::runtime("crypto.token: ttl_seconds must be positive"));
            }
            let mut body = match claims {
                Some(t) => match lua_to_json(&Value::Table(t)).map_err(mlua::Error::runtime)? {
                    serde_json::Value::Object(m) => m,
                    serde_json::Value::Array(a) if a.is_empty() => Default::default(),
                    _ => return Err(mlua::Error::runtime("crypto.token: claims must be a table with named fields")),
                },
                None => Default::default(),
            };
            body.insert("sub".into(), subject.into());
            body.insert("exp".into(), (now() + ttl).into());
            let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::Value::Object(body).to_string());
            Ok(format!("{payload}.{}", sign(&secret(lua)?, &payload)))
        })?,
    )?;
    crypto.raw_set(
        "verify_token",
        lua.create_function(|lua, values: MultiValue| {
            let (token,): (String,) = mlua::FromLuaMulti::from_lua_multi(strip(values), lua)?;
            let fail = |why: &str| Ok((Value::Nil, Value::String(lua.create_string(why)?)));
            let Some((payload, signature)) = token.split_once('.') else { return fail("malformed token") };
            let expected = sign(&secret(lua)?, payload);
            // Constant-time comparison of the signatures.
            let same = expected.len() == signature.len()
                && expected.bytes().zip(signature.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
            if !same {
                return fail("bad signature");
            }
            let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload) else { return fail("malformed token") };
            let Ok(claims) = serde_json::from_slice::<serde_json::Value>(&bytes) else { return fail("malformed token") };
            if claims.get("exp").and_then(|e| e.as_i64()).is_none_or(|exp| exp < now()) {
                return fail("expired");
            }
            Ok((json_to_lua(lua, &claims)?, Value::Nil))
        })?,
    )?;
    crypto.raw_set(
        "random_hex",
        lua.create_function(|lua, values: MultiValue| {
            let n: Option<usize> = args(lua, values, "crypto.random_hex")?;
            let n = n.unwrap_or(16);
            if n == 0 || n > 256 {
                return err("crypto.random_hex(n): n is a number of bytes between 1 and 256");
            }
            let mut bytes = vec![0u8; n];
            rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
            Ok(hex(&bytes))
        })?,
    )?;
    crypto.raw_set("uuid", lua.create_function(|_, _: MultiValue| Ok(uuid::Uuid::now_v7().to_string()))?)?;
    crypto.raw_set(
        "sha256_hex",
        lua.create_function(|lua, values: MultiValue| {
            let s: mlua::LuaString = args(lua, values, "crypto.sha256_hex")?;
            use sha2::Digest;
            Ok(hex(&sha2::Sha256::digest(s.as_bytes())))
        })?,
    )?;
    lua.globals().raw_set("crypto", crypto)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
