//! A service's Redis state kept in memory, for `superclient test` (no Redis server): it answers
//! the reads the `redis:*` functions make and applies the commands a call's overlay commits, with
//! Redis's meaning for each. Full key names, as in Redis (`<ns>:<script key>`).
//!
//! Rules, each a unit test below:
//! - reads answer as Redis would: a missing key is nil, an empty list or set, or 0;
//! - a commit applies its commands in order, all or nothing: one that finds a key of another
//!   type (or a non-integer under an increment) changes nothing and names the key;
//! - `VMAX` (the overlay's "remember the highest version") keeps the maximum;
//! - emptied hashes, lists and sets disappear, as in Redis.

use super::overlay::Cmd;
use std::collections::{BTreeMap, BTreeSet};

/// One Redis value.
#[derive(Debug, Clone, PartialEq)]
pub enum Stored {
    Str(String),
    Hash(BTreeMap<String, String>),
    List(Vec<String>),
    Set(BTreeSet<String>),
}

impl Stored {
    fn type_name(&self) -> &'static str {
        match self {
            Stored::Str(_) => "string",
            Stored::Hash(_) => "hash",
            Stored::List(_) => "list",
            Stored::Set(_) => "set",
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Stored::Str(_) => false,
            Stored::Hash(h) => h.is_empty(),
            Stored::List(l) => l.is_empty(),
            Stored::Set(s) => s.is_empty(),
        }
    }
}

/// The key space.
#[derive(Debug, Clone, Default)]
pub struct Memory {
    keys: BTreeMap<String, Stored>,
}

fn wrong_type(key: &str, held: &Stored, want: &str) -> String {
    format!("WRONGTYPE key {key} holds a {} but was used as a {want}", held.type_name())
}

fn int(s: &str, what: &str) -> Result<i64, String> {
    s.trim().parse::<i64>().map_err(|_| format!("{what} does not hold an integer ({s:?})"))
}

fn bulk(s: &str) -> redis::Value {
    redis::Value::BulkString(s.as_bytes().to_vec())
}

fn text(arg: redis::Arg<&[u8]>) -> String {
    match arg {
        redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
        _ => "0".into(),
    }
}

impl Memory {
    pub fn new() -> Memory {
        Memory::default()
    }

    pub fn get(&self, key: &str) -> Option<&Stored> {
        self.keys.get(key)
    }

    /// Keys whose names start with `prefix`, in order.
    pub fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a String, &'a Stored)> + 'a {
        self.keys.range(prefix.to_string()..).take_while(move |(k, _)| k.starts_with(prefix))
    }

    /// Answers a read command (`GET`, `EXISTS`, `HGET`, `HGETALL`, `LRANGE`, `LLEN`, `SMEMBERS`,
    /// `SISMEMBER`) as Redis would.
    pub fn read(&self, cmd: &redis::Cmd) -> Result<redis::Value, String> {
        let args: Vec<String> = cmd.args_iter().map(text).collect();
        let name = args.first().map(|s| s.to_ascii_uppercase()).unwrap_or_default();
        let key = args.get(1).cloned().unwrap_or_default();
        let arg = |i: usize| args.get(i).cloned().ok_or_else(|| format!("{name}: missing argument {i}"));
        let held = self.keys.get(&key);
        let kind = |want: &str| match held {
            Some(s) if s.type_name() != want => Err(wrong_type(&key, s, want)),
            _ => Ok(()),
        };
        Ok(match name.as_str() {
            "GET" => {
                kind("string")?;
                match held {
                    Some(Stored::Str(s)) => bulk(s),
                    _ => redis::Value::Nil,
                }
            }
            "EXISTS" => redis::Value::Int(i64::from(held.is_some())),
            "HGET" => {
                kind("hash")?;
                let field = arg(2)?;
                match held {
                    Some(Stored::Hash(h)) => h.get(&field).map_or(redis::Value::Nil, |v| bulk(v)),
                    _ => redis::Value::Nil,
                }
            }
            "HGETALL" => {
                kind("hash")?;
                let mut out = Vec::new();
                if let Some(Stored::Hash(h)) = held {
                    for (f, v) in h {
                        out.push(bulk(f));
                        out.push(bulk(v));
                    }
                }
                redis::Value::Array(out)
            }
            "LRANGE" => {
                kind("list")?;
                let items: &[String] = match held {
                    Some(Stored::List(l)) => l,
                    _ => &[],
                };
                let n = items.len() as i64;
                let norm = |i: i64| if i < 0 { (n + i).max(0) } else { i };
                let (s, e) = (norm(int(&arg(2)?, "LRANGE start")?), norm(int(&arg(3)?, "LRANGE stop")?).min(n - 1));
                let slice = if s > e || s >= n { &[][..] } else { &items[s as usize..=e as usize] };
                redis::Value::Array(slice.iter().map(|v| bulk(v)).collect())
            }
            "LLEN" => {
                kind("list")?;
                redis::Value::Int(match held {
                    Some(Stored::List(l)) => l.len() as i64,
                    _ => 0,
                })
            }
            "SMEMBERS" => {
                kind("set")?;
                redis::Value::Array(match held {
                    Some(Stored::Set(s)) => s.iter().map(|v| bulk(v)).collect(),
                    _ => Vec::new(),
                })
            }
            "SISMEMBER" => {
                kind("set")?;
                let member = arg(2)?;
                redis::Value::Int(i64::from(matches!(held, Some(Stored::Set(s)) if s.contains(&member))))
            }
            other => return Err(format!("the in-memory state does not answer {other}")),
        })
    }

    /// Applies a commit's commands in order; nothing changes if one of them fails.
    pub fn apply(&mut self, ops: &[Cmd]) -> Result<(), String> {
        let mut next = self.clone();
        for op in ops {
            next.apply_one(op)?;
        }
        *self = next;
        Ok(())
    }

    fn apply_one(&mut self, op: &Cmd) -> Result<(), String> {
        let name = op.first().map(String::as_str).unwrap_or_default();
        let key = op.get(1).cloned().ok_or_else(|| format!("{name}: no key"))?;
        let arg = |i: usize| op.get(i).cloned().ok_or_else(|| format!("{name} {key}: missing argument {i}"));
        let held = self.keys.get(&key).cloned();
        let want = match name {
            "SET" | "DEL" | "PEXPIRE" => None,
            "INCRBY" => Some("string"),
            "HSET" | "HDEL" | "HINCRBY" | "VMAX" => Some("hash"),
            "RPUSH" | "LPOP" => Some("list"),
            "SADD" | "SREM" => Some("set"),
            other => return Err(format!("the in-memory state does not apply {other}")),
        };
        if let (Some(want), Some(h)) = (want, &held) {
            if h.type_name() != want {
                return Err(wrong_type(&key, h, want));
            }
        }
        let entry = |s: &mut Self, empty: Stored| -> Stored { s.keys.remove(&key).unwrap_or(empty) };
        let value = match name {
            "SET" => Some(Stored::Str(arg(2)?)),
            "DEL" => None,
            // Expiry is not modelled: a test runs in well under any TTL.
            "PEXPIRE" => held,
            "INCRBY" => {
                let base = match &held {
                    Some(Stored::Str(s)) => int(s, &key)?,
                    _ => 0,
                };
                let n = base.checked_add(int(&arg(2)?, "INCRBY amount")?).ok_or_else(|| format!("INCRBY {key}: integer overflow"))?;
                Some(Stored::Str(n.to_string()))
            }
            "HSET" | "HDEL" | "HINCRBY" | "VMAX" => {
                let Stored::Hash(mut h) = entry(self, Stored::Hash(BTreeMap::new())) else { unreachable!("type checked") };
                let field = arg(2)?;
                match name {
                    "HSET" => {
                        h.insert(field, arg(3)?);
                    }
                    "HDEL" => {
                        h.remove(&field);
                    }
                    "HINCRBY" => {
                        let base = h.get(&field).map(|v| int(v, &format!("field {field} of {key}"))).transpose()?.unwrap_or(0);
                        let n = base.checked_add(int(&arg(3)?, "HINCRBY amount")?).ok_or_else(|| format!("HINCRBY {key}: integer overflow"))?;
                        h.insert(field, n.to_string());
                    }
                    _ => {
                        let v = int(&arg(3)?, "VMAX version")?;
                        if h.get(&field).and_then(|o| o.parse::<i64>().ok()).is_none_or(|old| v > old) {
                            h.insert(field, v.to_string());
                        }
                    }
                }
                Some(Stored::Hash(h))
            }
            "RPUSH" | "LPOP" => {
                let Stored::List(mut l) = entry(self, Stored::List(Vec::new())) else { unreachable!("type checked") };
                if name == "RPUSH" {
                    l.extend(op[2..].iter().cloned());
                } else if !l.is_empty() {
                    l.remove(0);
                }
                Some(Stored::List(l))
            }
            _ => {
                let Stored::Set(mut s) = entry(self, Stored::Set(BTreeSet::new())) else { unreachable!("type checked") };
                for m in &op[2..] {
                    if name == "SADD" {
                        s.insert(m.clone());
                    } else {
                        s.remove(m);
                    }
                }
                Some(Stored::Set(s))
            }
        };
        match value {
            Some(v) if !v.is_empty() => {
                self.keys.insert(key, v);
            }
            _ => {
                self.keys.remove(&key);
            }
        }
        Ok(())
    }

    /// Names of the keys matching a Redis glob (`*`, `?`, `\` escapes), in order.
    pub fn scan(&self, pattern: &str) -> Vec<String> {
        let unescaped = |p: &str| {
            let mut out = Vec::new();
            let mut chars = p.chars();
            while let Some(c) = chars.next() {
                out.push(match c {
                    '\\' => (chars.next().unwrap_or('\\'), true),
                    c => (c, false),
                });
            }
            out
        };
        let pattern = unescaped(pattern);
        fn matches(p: &[(char, bool)], s: &[char]) -> bool {
            match (p.first(), s.first()) {
                (None, None) => true,
                (Some(('*', false)), _) => matches(&p[1..], s) || (!s.is_empty() && matches(p, &s[1..])),
                (Some(('?', false)), Some(_)) => matches(&p[1..], &s[1..]),
                (Some((a, _)), Some(b)) if a == b => matches(&p[1..], &s[1..]),
                _ => false,
            }
        }
        self.keys.keys().filter(|k| matches(&pattern, &k.chars().collect::<Vec<_>>())).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(parts: &[&str]) -> redis::Cmd {
        let mut c = redis::cmd(parts[0]);
        for p in &parts[1..] {
            c.arg(*p);
        }
        c
    }

    fn op(parts: &[&str]) -> Cmd {
        parts.iter().map(|s| s.to_string()).collect()
    }

    fn get<T: redis::FromRedisValue>(m: &Memory, parts: &[&str]) -> T {
        redis::from_redis_value(m.read(&cmd(parts)).unwrap()).unwrap()
    }

    #[test]
    fn missing_keys_read_as_redis_answers() {
        let m = Memory::new();
        assert_eq!(get::<Option<String>>(&m, &["GET", "n:a"]), None);
        assert!(!get::<bool>(&m, &["EXISTS", "n:a"]));
        assert_eq!(get::<Vec<String>>(&m, &["LRANGE", "n:l", "0", "-1"]), Vec::<String>::new());
        assert_eq!(get::<usize>(&m, &["LLEN", "n:l"]), 0);
        assert_eq!(get::<BTreeMap<String, String>>(&m, &["HGETALL", "n:h"]).len(), 0);
        assert!(!get::<bool>(&m, &["SISMEMBER", "n:s", "x"]));
    }

    #[test]
    fn commits_apply_in_order_with_redis_meaning() {
        let mut m = Memory::new();
        m.apply(&[
            op(&["SET", "n:a", "1"]),
            op(&["INCRBY", "n:a", "4"]),
            op(&["HSET", "n:h", "f", "\"x\""]),
            op(&["HINCRBY", "n:h", "n", "2"]),
            op(&["RPUSH", "n:l", "1"]),
            op(&["RPUSH", "n:l", "2"]),
            op(&["SADD", "n:s", "a"]),
            op(&["SADD", "n:s", "b"]),
            op(&["SREM", "n:s", "a"]),
            op(&["VMAX", "n:__versions", "acc-1", "3"]),
            op(&["VMAX", "n:__versions", "acc-1", "2"]),
        ])
        .unwrap();
        assert_eq!(get::<String>(&m, &["GET", "n:a"]), "5");
        assert_eq!(get::<Option<String>>(&m, &["HGET", "n:h", "n"]).as_deref(), Some("2"));
        assert_eq!(get::<Vec<String>>(&m, &["LRANGE", "n:l", "-1", "-1"]), ["2"]);
        assert_eq!(get::<Vec<String>>(&m, &["SMEMBERS", "n:s"]), ["b"]);
        assert_eq!(get::<Option<String>>(&m, &["HGET", "n:__versions", "acc-1"]).as_deref(), Some("3"));
        m.apply(&[op(&["SREM", "n:s", "b"]), op(&["HDEL", "n:h", "f"]), op(&["HDEL", "n:h", "n"])]).unwrap();
        assert!(!get::<bool>(&m, &["EXISTS", "n:s"]), "an emptied set is gone");
        assert!(!get::<bool>(&m, &["EXISTS", "n:h"]), "an emptied hash is gone");
    }

    #[test]
    fn a_failing_commit_changes_nothing() {
        let mut m = Memory::new();
        m.apply(&[op(&["SET", "n:a", "\"text\""])]).unwrap();
        let e = m.apply(&[op(&["SET", "n:b", "1"]), op(&["HSET", "n:a", "f", "1"])]).unwrap_err();
        assert!(e.contains("WRONGTYPE") && e.contains("n:a"), "{e}");
        assert!(!get::<bool>(&m, &["EXISTS", "n:b"]));
        let e = m.apply(&[op(&["INCRBY", "n:a", "1"])]).unwrap_err();
        assert!(e.contains("integer"), "{e}");
        assert!(m.read(&cmd(&["HGET", "n:a", "f"])).unwrap_err().contains("WRONGTYPE"));
    }

    #[test]
    fn scans_with_redis_globs() {
        let mut m = Memory::new();
        m.apply(&[op(&["SET", "s@1:count:a", "1"]), op(&["SET", "s@1:count:b", "1"]), op(&["SET", "s@1:other", "1"]), op(&["SET", "s@1*x", "1"])]).unwrap();
        assert_eq!(m.scan("s@1:count:*"), ["s@1:count:a", "s@1:count:b"]);
        assert_eq!(m.scan("s@1\\*x"), ["s@1*x"]);
        assert_eq!(m.with_prefix("s@1:").count(), 3);
    }
}
