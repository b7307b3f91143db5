//! The commit and lock scripts, run as they are (the same text Redis runs) against a small
//! in-memory Redis made of Lua tables: the serializability rules without a server, down to a
//! property test over random interleavings of read-modify-write transactions.

use super::*;
use crate::state::Overlay;
use mlua::{Lua, LuaSerdeExt, Value};
use proptest::prelude::*;
use std::collections::HashMap;

/// The commands the scripts call, on Lua tables; `TIME` is a counter the test sets.
const FAKE_REDIS: &str = r#"
DB, CLOCK = {}, 1000000
local function kind(k) local e = DB[k]; return e and e.t or 'none' end
local function get(k, t) local e = DB[k]; if e == nil then return nil end; assert(e.t == t, 'WRONGTYPE ' .. k); return e.v end
local function need(k, t) local e = DB[k]; if e == nil then e = { t = t, v = {} }; DB[k] = e end; assert(e.t == t, 'WRONGTYPE ' .. k); return e.v end
local C = {}
function C.GET(k) local e = DB[k]; if e == nil then return false end; assert(e.t == 'string'); return e.v end
function C.SET(k, v) DB[k] = { t = 'string', v = tostring(v) }; return 'OK' end
function C.DEL(k) DB[k] = nil; return 1 end
function C.EXISTS(k) return DB[k] and 1 or 0 end
function C.TYPE(k) return { ok = kind(k) } end
function C.INCRBY(k, by) local v = tonumber(C.GET(k) or '0') + tonumber(by); C.SET(k, tostring(v)); return v end
function C.HGET(k, f) local h = get(k, 'hash'); return h and h[f] or false end
function C.HSET(k, f, v) need(k, 'hash')[f] = tostring(v); return 1 end
function C.HDEL(k, f) local h = get(k, 'hash'); if h then h[f] = nil; if next(h) == nil then DB[k] = nil end end; return 1 end
function C.HLEN(k) local h = get(k, 'hash'); local n = 0; for _ in pairs(h or {}) do n = n + 1 end; return n end
function C.HINCRBY(k, f, by) local h = need(k, 'hash'); local v = tonumber(h[f] or '0') + tonumber(by); h[f] = tostring(v); return v end
function C.RPUSH(k, v) local l = need(k, 'list'); l[#l + 1] = v; return #l end
function C.LPOP(k) local l = get(k, 'list'); if not l then return false end; local v = table.remove(l, 1); return v end
function C.LINDEX(k, i) local l = get(k, 'list'); return l and l[i + 1] or false end
function C.SADD(k, m) need(k, 'set')[m] = true; return 1 end
function C.SREM(k, m) local s = get(k, 'set'); if s then s[m] = nil end; return 1 end
function C.ZSCORE(k, m) local z = get(k, 'zset'); return z and z[m] and tostring(z[m]) or false end
function C.ZREMRANGEBYSCORE(k) return 0 end
function C.PUBLISH() return 0 end
function C.TIME() return { tostring(CLOCK // 1000), tostring((CLOCK % 1000) * 1000) } end
redis = {
  call = function(cmd, ...) local f = C[cmd]; assert(f, 'the fake Redis has no ' .. cmd); return f(...) end,
  error_reply = function(msg) return { err = msg } end,
}
unpack = table.unpack
"#;

struct FakeRedis {
    lua: Lua,
}

impl FakeRedis {
    fn new() -> FakeRedis {
        let lua = Lua::new();
        lua.load(FAKE_REDIS).exec().expect("the fake Redis loads");
        let cjson = lua.create_table().unwrap();
        cjson
            .set(
                "decode",
                lua.create_function(|lua, s: String| {
                    let v: serde_json::Value = serde_json::from_str(&s).map_err(mlua::Error::external)?;
                    lua.to_value(&v)
                })
                .unwrap(),
            )
            .unwrap();
        lua.globals().set("cjson", cjson).unwrap();
        FakeRedis { lua }
    }

    /// Runs `script` with one ARGV; `{code, detail}` as the superclient reads it.
    fn eval(&self, script: &str, arg: String) -> (i64, String) {
        self.lua.globals().set("ARGV", vec![arg]).unwrap();
        self.lua.globals().set("KEYS", Vec::<String>::new()).unwrap();
        let out: Value = self.lua.load(script).eval().expect("the script runs");
        match out {
            Value::Table(t) => {
                if let Ok(err) = t.get::<String>("err") {
                    return (i64::MIN, err);
                }
                (t.get::<i64>(1).unwrap(), t.get::<String>(2).unwrap_or_default())
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }

    fn set(&self, key: &str, value: &str) {
        self.lua.load(format!("C_SET = redis.call('SET', {key:?}, {value:?})")).exec().unwrap();
    }

    fn get(&self, key: &str) -> Option<String> {
        let v: Value = self.lua.load(format!("return redis.call('GET', {key:?})")).eval().unwrap();
        match v {
            Value::String(s) => Some(s.to_str().unwrap().to_string()),
            _ => None,
        }
    }

    fn hget(&self, key: &str, field: &str) -> Option<String> {
        let v: Value = self.lua.load(format!("return redis.call('HGET', {key:?}, {field:?})")).eval().unwrap();
        match v {
            Value::String(s) => Some(s.to_str().unwrap().to_string()),
            _ => None,
        }
    }

    fn commit(&self, overlay: &Overlay, owner: Option<&str>, locked: &[String]) -> i64 {
        let changes = Changes { expected_active: Some(NS), ns: NS, guard: Guard::None, overlay, owner, locked };
        self.eval(COMMIT_SCRIPT, commit_args(SVC, &changes)).0
    }

    fn lock(&self, reads: &HashMap<String, u64>, owner: &str) -> i64 {
        self.eval(LOCK_SCRIPT, lock_args(SVC, NS, reads, owner)).0
    }

    /// Reads script key `key` as a handler does: its value and the revision it depends on.
    fn read(&self, key: &str) -> (i64, u64) {
        let v = self.get(&script_key(NS, key)).map_or(0, |v| v.parse().unwrap());
        let rev = self.hget(&revisions_key(NS), key).map_or(0, |r| r.parse().unwrap());
        (v, rev)
    }
}

const SVC: &str = "svc";
const NS: &str = "svc@1";

fn fake() -> FakeRedis {
    let r = FakeRedis::new();
    r.set(&active_key(SVC), NS);
    r
}

/// `key = value` after reading it at `revision`.
fn rmw(key: &str, value: i64, revision: u64) -> Overlay {
    let mut o = Overlay::new();
    o.note_read(key, revision);
    o.set(key, &script_key(NS, key), value.to_string());
    o
}

#[test]
fn a_commit_applies_its_writes_and_moves_their_revisions() {
    let r = fake();
    assert_eq!(r.commit(&rmw("count", 1, 0), None, &[]), 1);
    assert_eq!(r.read("count"), (1, 1));
    assert_eq!(r.hget(&revisions_key(NS), &whole_revision("count")).as_deref(), Some("1"));
}

#[test]
fn a_read_written_since_refuses_the_commit_and_changes_nothing() {
    let r = fake();
    assert_eq!(r.commit(&rmw("count", 1, 0), None, &[]), 1);
    // Another call read count at revision 0, before the first commit.
    assert_eq!(r.commit(&rmw("count", 1, 0), None, &[]), -3);
    assert_eq!(r.read("count"), (1, 1));
}

#[test]
fn a_call_that_only_reads_commits_whatever_moved() {
    let r = fake();
    assert_eq!(r.commit(&rmw("count", 1, 0), None, &[]), 1);
    let mut o = Overlay::new();
    o.note_read("count", 0);
    o.note_version(&versions_key(NS), "acc-1", 3);
    assert_eq!(r.commit(&o, None, &[]), 1, "nothing the read decided is written");
}

#[test]
fn a_lock_taken_before_a_send_holds_writers_off_until_its_commit() {
    let r = fake();
    let reads: HashMap<String, u64> = [("count".to_string(), 0)].into();
    assert_eq!(r.lock(&reads, "a"), 1);
    // A writer of the locked key waits (Locked), whoever it is.
    assert_eq!(r.commit(&rmw("count", 5, 0), Some("b"), &[]), -4);
    // The holder commits and releases.
    assert_eq!(r.commit(&rmw("count", 1, 0), Some("a"), &["count".to_string()]), 1);
    assert_eq!(r.read("count"), (1, 1));
    assert!(r.hget(&locks_key(NS), "count").is_none(), "released");
    // A stale lock attempt fails as stale.
    assert_eq!(r.lock(&reads, "b"), -3);
}

#[test]
fn a_lock_outlives_nobody_for_ever() {
    let r = fake();
    let reads: HashMap<String, u64> = [("count".to_string(), 0)].into();
    assert_eq!(r.lock(&reads, "a"), 1);
    r.lua.load(format!("CLOCK = CLOCK + {}", LOCK_TTL.as_millis() + 1)).exec().unwrap();
    assert_eq!(r.commit(&rmw("count", 5, 0), Some("b"), &[]), 1, "an expired lock (its owner died) holds nobody off");
}

#[test]
fn fields_of_a_hash_are_read_and_written_apart() {
    let r = fake();
    let field = |name: &str, value: &str, revs: &[(String, u64)]| {
        let mut o = Overlay::new();
        for (k, v) in revs {
            o.note_read(k, *v);
        }
        o.hset("ops", &script_key(NS, "ops"), name, value.into()).unwrap();
        o
    };
    // Two calls each read their own field (at revision 0) and write it: both commit.
    let f = |n: &str| vec![(field_revision("ops", n), 0), (whole_revision("ops"), 0)];
    assert_eq!(r.commit(&field("a", "1", &f("a")), None, &[]), 1);
    assert_eq!(r.commit(&field("b", "2", &f("b")), None, &[]), 1);
    // A reader of field a before its write is stale; a reader of the whole hash too.
    assert_eq!(r.commit(&field("a", "3", &f("a")), None, &[]), -3);
    assert_eq!(r.commit(&field("c", "3", &[("ops".to_string(), 0)]), None, &[]), -3);
    // Deleting the whole hash moves every field's readers' dependency.
    let mut del = Overlay::new();
    del.del("ops", &script_key(NS, "ops"));
    assert_eq!(r.commit(&del, None, &[]), 1);
    let after_b = vec![(field_revision("ops", "b"), 1), (whole_revision("ops"), 0)];
    assert_eq!(r.commit(&field("b", "9", &after_b), None, &[]), -3);
}

/// What one transaction of the property test is doing.
#[derive(Clone, Copy, Debug)]
enum Txn {
    /// Not started (or restarting after a refused commit).
    Idle,
    /// Read the counter: its value and revision.
    Read(i64, u64),
    Done,
}

proptest! {
    /// Transactions increment one shared counter (`get`, then `set` to one more), each commit
    /// checked against the revision read. Whatever the interleaving of reads and commits, and
    /// with refused ones starting over, every transaction counts exactly once.
    #[test]
    fn read_modify_write_counts_every_transaction_once(transactions in 2usize..8, schedule in proptest::collection::vec(0usize..8, 0..64)) {
        let r = fake();
        let mut txns = vec![Txn::Idle; transactions];
        let mut refused = 0;
        let steps = schedule.into_iter().map(|i| i % transactions).chain((0..transactions * transactions * 4).map(|i| i % transactions));
        for i in steps {
            txns[i] = match txns[i] {
                Txn::Idle => {
                    let (v, rev) = r.read("count");
                    Txn::Read(v, rev)
                }
                Txn::Read(v, rev) => match r.commit(&rmw("count", v + 1, rev), None, &[]) {
                    1 => Txn::Done,
                    -3 => {
                        refused += 1;
                        Txn::Idle
                    }
                    other => panic!("unexpected commit answer {other}"),
                },
                Txn::Done => Txn::Done,
            };
        }
        prop_assert!(txns.iter().all(|t| matches!(t, Txn::Done)), "{txns:?}");
        prop_assert_eq!(r.read("count").0, transactions as i64, "refused {} times", refused);
    }
}
