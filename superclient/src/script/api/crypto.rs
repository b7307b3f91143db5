//! `crypto.*`: what a users service needs to keep passwords and sessions.
//!
//! - `crypto.hash_password(pw)` → `peppered:` + an Argon2id PHC string (keyed with the pepper);
//!   `crypto.verify_password(pw, hash)` → bool.
//! - `crypto.random_hex(nbytes)`, `crypto.uuid()`, `crypto.sha256_hex(s)`: random ids (OS
//!   randomness), a UUID v7, a digest;
//! - `crypto.token(subject, ttl_seconds, claims?)` → a signed, expiring token
//!   `base64url(json).base64url(hmac_sha256)`, json = `{sub, exp, iat, jti, iss, ...claims}`;
//!   only for services that declare `mints_tokens = true`; `iss` is the minting service (a
//!   script cannot choose it), `jti` a random token id (for revocation);
//!   `crypto.verify_token(token[, {issuer = "users" | {...}}])` → the claims table, or
//!   `nil, reason`; with `issuer`, tokens minted by any other service are refused;
//! - `crypto.seal(value[, context])` → `sealed:v1:...`, the value (a table, string, number or
//!   boolean, as JSON) encrypted and authenticated (ChaCha20-Poly1305) under the service's seal
//!   key, bound to `context` (a string: the same one opens it); `crypto.open(sealed[, context])`
//!   → the value, or `nil, reason`. The key comes from `SEQUENT_<SERVICE>_SEAL_KEY` (the
//!   service's name in capitals, `-` as `_`; at least 32 bytes), so a service opens only what it
//!   sealed; readers of the stream without the key see noise.
//!
//! The signing key comes from `SEQUENT_TOKEN_SECRET`, the password pepper from
//! `SEQUENT_PASSWORD_PEPPER` (each at least 32 bytes). Without them, fixed development values
//! are used, and only in development mode (`SEQUENT_DEV=1`, as the test harness runs); see [`Secrets::from_env`].
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
/// The development seal key: public, so what is sealed with it is readable by anyone.
pub const DEV_SEAL_KEY: &str = "sequent-DEVELOPMENT-ONLY-seal-key-do-not-use-in-production";
/// Marks a sealed value.
const SEALED: &str = "sealed:v1:";
/// Claims `crypto.token` sets itself.
const RESERVED_CLAIMS: [&str; 5] = ["sub", "exp", "iat", "jti", "iss"];
/// Marks a hash made with the pepper.
const PEPPERED: &str = "peppered:";

/// The secrets of the `crypto.*` functions; None: the functions that need it raise an error.
#[derive(Clone, Default)]
pub struct Secrets {
    pub token: Option<Vec<u8>>,
    pub pepper: Option<Vec<u8>>,
    /// Whether the public development values may be used (`SEQUENT_DEV=1`).
    pub dev: bool,
    /// The service's seal key, read on first use (the service's name is known once its script
    /// registered): `Err` names what is wrong with `SEQUENT_<SERVICE>_SEAL_KEY`.
    seal: std::sync::OnceLock<Result<[u8; 32], String>>,
}

impl Secrets {
    /// `SEQUENT_TOKEN_SECRET` and `SEQUENT_PASSWORD_PEPPER`, or the development values when the
    /// process runs in development mode (`SEQUENT_DEV=1`).
    pub fn from_env(dev: bool) -> anyhow::Result<Secrets> {
        Ok(Secrets {
            token: secret_from_env("SEQUENT_TOKEN_SECRET", DEV_TOKEN_SECRET, "tokens are signed with", dev)?,
            pepper: secret_from_env("SEQUENT_PASSWORD_PEPPER", DEV_PASSWORD_PEPPER, "passwords are hashed with", dev)?,
            dev,
            seal: Default::default(),
        })
    }

    /// The seal key of `service`: HKDF-SHA256 of `SEQUENT_<SERVICE>_SEAL_KEY`.
    fn seal_key(&self, service: &str) -> Result<[u8; 32], String> {
        self.seal
            .get_or_init(|| {
                let name = seal_key_variable(service);
                let secret = match std::env::var(&name) {
                    Ok(s) if s.len() >= 32 => s.into_bytes(),
                    Ok(_) => return Err(format!("{name} is shorter than 32 bytes; use a long random value")),
                    Err(_) if self.dev => {
                        tracing::warn!("{name} is not set: values are sealed with the public development key (SEQUENT_DEV=1)");
                        DEV_SEAL_KEY.as_bytes().to_vec()
                    }
                    Err(_) => return Err(format!("{name} is not set (required outside development mode, SEQUENT_DEV=1)")),
                };
                let salt = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"sequent seal v1");
                let info = [service.as_bytes()];
                let prk = salt.extract(&secret);
                let okm = prk.expand(&info, ring::hkdf::HKDF_SHA256).map_err(|_| "deriving the seal key failed".to_string())?;
                let mut key = [0u8; 32];
                okm.fill(&mut key).map_err(|_| "deriving the seal key failed".to_string())?;
                Ok(key)
            })
            .clone()
    }
}

/// `SEQUENT_<SERVICE>_SEAL_KEY`.
pub fn seal_key_variable(service: &str) -> String {
    format!("SEQUENT_{}_SEAL_KEY", service.to_ascii_uppercase().replace('-', "_"))
}

fn seal_aad(service: &str, context: &str) -> Vec<u8> {
    [b"sequent seal v1\0".as_slice(), service.as_bytes(), b"\0", context.as_bytes()].concat()
}

/// Encrypts `plain` under `key`: `sealed:v1:` + base64url(nonce || ciphertext || tag).
fn seal_bytes(key: &[u8; 32], aad: &[u8], plain: &[u8]) -> Result<String, String> {
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
    let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key).map_err(|_| "bad seal key")?);
    let mut nonce = [0u8; NONCE_LEN];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut nonce);
    let mut data = plain.to_vec();
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut data).map_err(|_| "sealing failed")?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&data);
    Ok(format!("{SEALED}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out)))
}

/// The plain bytes of a sealed value, or why not.
fn open_bytes(key: &[u8; 32], aad: &[u8], sealed: &str) -> Result<Vec<u8>, &'static str> {
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
    let body = sealed.strip_prefix(SEALED).ok_or("not a sealed value")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(body).map_err(|_| "malformed sealed value")?;
    if bytes.len() < NONCE_LEN + CHACHA20_POLY1305.tag_len() {
        return Err("malformed sealed value");
    }
    let (nonce, data) = bytes.split_at(NONCE_LEN);
    let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key).map_err(|_| "bad seal key")?);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| "malformed sealed value")?;
    let mut data = data.to_vec();
    let plain = key
        .open_in_place(nonce, Aad::from(aad), &mut data)
        .map_err(|_| "the value cannot be opened (another service's or key's, another context, or altered)")?;
    Ok(plain.to_vec())
}

fn secret_from_env(name: &str, dev_value: &str, what: &str, dev: bool) -> anyhow::Result<Option<Vec<u8>>> {
    match std::env::var(name) {
        Ok(s) if s.len() >= 32 => Ok(Some(s.into_bytes())),
        Ok(_) => anyhow::bail!("{name} is shorter than 32 bytes; use a long random value"),
        Err(_) if dev => {
            tracing::warn!("{name} is not set: {what} the public development value (SEQUENT_DEV=1)");
            Ok(Some(dev_value.as_bytes().to_vec()))
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
        .ok_or_else(|| mlua::Error::runtime(format!("crypto: {name} is not set (required outside development mode, SEQUENT_DEV=1)")))
}

/// The service the script registered as, and its declaration's `mints_tokens`.
fn service(lua: &Lua) -> (Option<String>, bool) {
    match lua.app_data_ref::<crate::script::handlers::Handlers>() {
        Some(h) => (h.service.clone(), h.declaration.mints_tokens),
        None => (None, false),
    }
}

fn seal_key(lua: &Lua, what: &str) -> mlua::Result<(String, [u8; 32])> {
    let Some(service) = service(lua).0 else { return err(format!("{what}: the script has not registered its service yet")) };
    let shared = lua.app_data_ref::<Arc<Shared>>().expect("installed").clone();
    let key = shared.secrets.seal_key(&service).map_err(|e| mlua::Error::runtime(format!("{what}: {e}")))?;
    Ok((service, key))
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
            let (issuer, mints) = service(lua);
            let Some(issuer) = issuer.filter(|_| mints) else {
                return err(
                    "crypto.token: this service does not mint tokens; only services that declare it may \
                     (bus:register(name, { mints_tokens = true }))",
                );
            };
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
            if let Some(c) = RESERVED_CLAIMS.iter().find(|c| body.contains_key(**c)) {
                return err(format!("crypto.token: the claim {c:?} is set by crypto.token itself"));
            }
            let mut id = [0u8; 16];
            rand::RngCore::fill_bytes(&mut rand::rng(), &mut id);
            body.insert("sub".into(), subject.into());
            body.insert("iat".into(), now().into());
            body.insert("exp".into(), (now() + ttl).into());
            body.insert("jti".into(), hex(&id).into());
            body.insert("iss".into(), issuer.into());
            let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::Value::Object(body).to_string());
            Ok(format!("{payload}.{}", sign(&secret(lua)?, &payload)))
        })?,
    )?;
    crypto.raw_set(
        "verify_token",
        lua.create_function(|lua, values: MultiValue| {
            let (token, opts): (String, Option<Table>) = mlua::FromLuaMulti::from_lua_multi(strip(values), lua)?;
            let issuers: Option<Vec<String>> = match &opts {
                None => None,
                Some(t) => match t.get::<Value>("issuer")? {
                    Value::Nil => None,
                    Value::String(s) => Some(vec![s.to_str()?.to_string()]),
                    Value::Table(list) => Some(list.sequence_values::<String>().collect::<mlua::Result<_>>()?),
                    other => return err(format!("crypto.verify_token: issuer is a service name or a list of them, not a {}", other.type_name())),
                },
            };
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
            if let Some(issuers) = issuers {
                if !claims.get("iss").and_then(|i| i.as_str()).is_some_and(|i| issuers.iter().any(|w| w == i)) {
                    return fail("minted by another service");
                }
            }
            Ok((json_to_lua(lua, &claims)?, Value::Nil))
        })?,
    )?;
    crypto.raw_set(
        "seal",
        lua.create_function(|lua, values: MultiValue| {
            let (value, context): (Value, Option<String>) = mlua::FromLuaMulti::from_lua_multi(strip(values), lua)?;
            if value.is_nil() {
                return err("crypto.seal: nothing to seal (nil)");
            }
            let json = lua_to_json(&value).map_err(|e| mlua::Error::runtime(format!("crypto.seal: {e}")))?;
            let (service, key) = seal_key(lua, "crypto.seal")?;
            seal_bytes(&key, &seal_aad(&service, context.as_deref().unwrap_or("")), json.to_string().as_bytes())
                .map_err(|e| mlua::Error::runtime(format!("crypto.seal: {e}")))
        })?,
    )?;
    crypto.raw_set(
        "open",
        lua.create_function(|lua, values: MultiValue| {
            let (sealed, context): (String, Option<String>) = mlua::FromLuaMulti::from_lua_multi(strip(values), lua)?;
            let (service, key) = seal_key(lua, "crypto.open")?;
            let fail = |why: &str| Ok((Value::Nil, Value::String(lua.create_string(why)?)));
            match open_bytes(&key, &seal_aad(&service, context.as_deref().unwrap_or("")), &sealed) {
                Ok(plain) => match serde_json::from_slice::<serde_json::Value>(&plain) {
                    Ok(v) => Ok((json_to_lua(lua, &v)?, Value::Nil)),
                    Err(_) => fail("the sealed value is not JSON"),
                },
                Err(why) => fail(why),
            }
        })?,
    )?;
    crypto.raw_set(
        "is_sealed",
        lua.create_function(|lua, values: MultiValue| {
            let (v,): (Value,) = mlua::FromLuaMulti::from_lua_multi(strip(values), lua)?;
            Ok(matches!(v, Value::String(s) if s.as_bytes().starts_with(SEALED.as_bytes())))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_same_key_service_and_context() {
        let key = [7u8; 32];
        let sealed = seal_bytes(&key, &seal_aad("users", "user-ann"), b"\"secret\"").unwrap();
        assert!(sealed.starts_with(SEALED));
        assert!(!sealed.contains("secret"));
        assert_eq!(open_bytes(&key, &seal_aad("users", "user-ann"), &sealed).unwrap(), b"\"secret\"");
        assert!(open_bytes(&[8u8; 32], &seal_aad("users", "user-ann"), &sealed).is_err(), "another key");
        assert!(open_bytes(&key, &seal_aad("accounts", "user-ann"), &sealed).is_err(), "another service");
        assert!(open_bytes(&key, &seal_aad("users", "user-bob"), &sealed).is_err(), "another context");
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 3;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert!(open_bytes(&key, &seal_aad("users", "user-ann"), std::str::from_utf8(&tampered).unwrap()).is_err(), "altered");
        assert!(open_bytes(&key, &seal_aad("users", "user-ann"), "peppered:$argon2id$...").is_err());
        // Two seals of one value differ (random nonces).
        assert_ne!(sealed, seal_bytes(&key, &seal_aad("users", "user-ann"), b"\"secret\"").unwrap());
        assert_eq!(seal_key_variable("my-svc"), "SEQUENT_MY_SVC_SEAL_KEY");
    }
}
