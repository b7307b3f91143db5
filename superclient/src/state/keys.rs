//! Where a service's state lives in Redis (`<svc>` = service type, `<ns>` = `<svc>@<generation>`):
//!
//! | key | what |
//! |---|---|
//! | `sequent:<svc>:active` | name of the active namespace, e.g. `accounts@3` |
//! | `sequent:<svc>:generation` | counter for new namespaces |
//! | `sequent:<svc>:rebuild-lock` | instance doing the automatic initial rebuild (expires) |
//! | `sequent:<svc>:rebuild` | hash: a rebuild an operator asked for, and its progress ([`super::rebuilds`]) |
//! | `sequent:<svc>:swap-freeze` | rebuilt namespace catching up right before its swap: commits to the active one wait (expires) |
//! | `sequent:<svc>:watch` | sorted set: script keys some `bus:wait` watches, scored by the wait's deadline (ms) |
//! | channel `sequent:<svc>:commits` | pub/sub: the watched keys a commit wrote (wakes `bus:wait`) |
//! | `<ns>:<key>` | the script's own keys (`redis:set("acc-1", ...)`) |
//! | `<ns>:__applied:<p>` | stream sequence of the last event of partition `p` applied |
//! | `<ns>:__versions` | hash: event key → last version this service knows of (for `expect = false`) |
//! | `<ns>:__rev` | hash: script key → how many commits wrote it (reads are checked against it at commit) |
//! | `<ns>:__locks` | hash: script key → `<owner>:<deadline ms>`, held from a send decided on it until its commit |
//! | `<ns>:__parked` | set of parked keys |
//! | `<ns>:__parked:<key>` | JSON: why and where the key is parked |
//! | `<ns>:__held:<key>` | list of stream sequences of the key not yet applied (head = parked one) |
//! | `<ns>:__release` | set of keys an operator asked to release |
//!
//! Script keys are mapped so that they never collide with the framework's ([`script_key`]).

pub fn active_key(service: &str) -> String {
    format!("sequent:{service}:active")
}
pub fn generation_key(service: &str) -> String {
    format!("sequent:{service}:generation")
}
pub fn rebuild_lock_key(service: &str) -> String {
    format!("sequent:{service}:rebuild-lock")
}
/// Set (to the rebuilt namespace, with an expiry) while a rebuild catches up with live
/// delivery right before its swap: commits to the active namespace wait meanwhile.
pub fn swap_freeze_key(service: &str) -> String {
    format!("sequent:{service}:swap-freeze")
}
/// Script keys that routes of some instance wait on (`bus:wait`), scored by deadline.
pub fn watch_key(service: &str) -> String {
    format!("sequent:{service}:watch")
}
/// Redis pub/sub channel on which commits announce the watched keys they wrote.
pub fn commits_channel(service: &str) -> String {
    format!("sequent:{service}:commits")
}
pub fn applied_key(ns: &str, partition: u32) -> String {
    format!("{ns}:__applied:{partition}")
}
pub fn versions_key(ns: &str) -> String {
    format!("{ns}:__versions")
}
pub fn revisions_key(ns: &str) -> String {
    format!("{ns}:__rev")
}
pub fn locks_key(ns: &str) -> String {
    format!("{ns}:__locks")
}
pub fn parked_set_key(ns: &str) -> String {
    format!("{ns}:__parked")
}
pub fn parked_key(ns: &str, key: &str) -> String {
    format!("{ns}:__parked:{key}")
}
pub fn held_key(ns: &str, key: &str) -> String {
    format!("{ns}:__held:{key}")
}
pub fn release_key(ns: &str) -> String {
    format!("{ns}:__release")
}
/// The full Redis name of script key `key` in namespace `ns`. Script keys that would look
/// like the framework's (`__...`) or like an escaped one (`~...`) get a `~` in front, so scripts
/// may use any name (the original's `__account_id` counters) and never reach a framework key.
pub fn script_key(ns: &str, key: &str) -> String {
    if key.starts_with("__") || key.starts_with('~') {
        format!("{ns}:~{key}")
    } else {
        format!("{ns}:{key}")
    }
}

/// The script's name of a stored key (the part after `<ns>:`), or None for a framework key.
pub fn script_name(stored: &str) -> Option<&str> {
    if stored.starts_with("__") {
        None
    } else {
        Some(stored.strip_prefix('~').unwrap_or(stored))
    }
}

/// What a read depends on, named as revisions of `<ns>:__rev`: a whole script key (any write
/// to it moves revision `<key>`), or one field of a hash (moved by writes of that field,
/// `<key>\0<field>`, and by writes of the whole key, `<key>\0`). Hashes used as maps (request
/// id → version) are read and written field by field: a write of one entry does not disturb
/// the readers of another.
#[derive(Debug, Clone, Copy)]
pub enum Depends<'a> {
    Key(&'a str),
    Field(&'a str, &'a str),
}

impl Depends<'_> {
    pub fn key(&self) -> &str {
        match self {
            Depends::Key(k) | Depends::Field(k, _) => k,
        }
    }

    pub fn revisions(&self) -> Vec<String> {
        match self {
            Depends::Key(k) => vec![k.to_string()],
            Depends::Field(k, f) => vec![field_revision(k, f), whole_revision(k)],
        }
    }
}

/// Revision moved by writes of field `field` of hash `key`.
pub fn field_revision(key: &str, field: &str) -> String {
    format!("{key}\u{0}{field}")
}

/// Revision moved by writes of the whole of `key` (not of one hash field).
pub fn whole_revision(key: &str) -> String {
    format!("{key}\u{0}")
}

/// Checks a script-chosen key.
pub fn check_user_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("redis key is empty".into());
    }
    if key.len() > 512 {
        return Err(format!("redis key is {} bytes long; the limit is 512", key.len()));
    }
    Ok(())
}

/// Stored values are JSON text; anything else (written by other tools) reads as a string.
pub fn decode(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|_| serde_json::Value::String(s.to_string()))
}

pub fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Glob match with `*` and `?` (what `redis:keys` patterns use), for the overlay's keys.
pub fn glob_match(pattern: &str, s: &str) -> bool {
    fn rec(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => rec(&p[1..], s) || (!s.is_empty() && rec(p, &s[1..])),
            (Some(b'?'), Some(_)) => rec(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => rec(&p[1..], &s[1..]),
            _ => false,
        }
    }
    rec(pattern.as_bytes(), s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("count:*", "count:k-1"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("*", ""));
        assert_eq!(glob_escape("svc@1:a*"), "svc@1:a\\*");
    }

    #[test]
    fn script_keys_never_reach_framework_keys() {
        assert!(check_user_key("").is_err());
        assert_eq!(script_key("s@1", "acc-1"), "s@1:acc-1");
        assert_eq!(script_key("s@1", "__applied:1"), "s@1:~__applied:1");
        assert_ne!(script_key("s@1", "~__x"), script_key("s@1", "__x"));
        for key in ["acc-1", "__account_id", "~x", "~__x", "~~"] {
            let stored = script_key("s@1", key);
            assert_eq!(script_name(stored.strip_prefix("s@1:").unwrap()), Some(key), "{key} round trips");
        }
        assert_eq!(script_name("__applied:3"), None);
    }
}
