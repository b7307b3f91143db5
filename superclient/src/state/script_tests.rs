//! The commit and lock scripts, run as they are (the same text Redis runs) against a small
//! in-memory Redis made of Lua tables: the serializability rules without a server, down to a
//! property test over random interleavings of read-modify-write transactions.

use super::*;
use crate::state::Overlay;
use mlua::{Lua, LuaSerdeExt, Value};
use proptest::prelude::*;
use std::collections::HashMap;

/// The commands the scripts call, on Lua tables; `TIME` is a counter the test sets (ms), which
/// also expires keys. `CALLS` counts the commands by name.
const FAKE_REDIS: &str = r#"
DB, CLOCK, CALLS = {}, 1000000, {}
local function live(k) local e = DB[k]; if e and e.exp and e.exp <= CLOCK then DB[k] = nil; e = nil end; return e end
local function kind(k) local e = live(k); return e and e.t or 'none' end
local function get(k, t) local e = live(k); if e == nil then return nil end; assert(e.t == t, 'WRONGTYPE ' .. k); return e.v end
local function need(k, t) local e = live(k); if e == nil then e = { t = t, v = {} }; DB[k] = e end; assert(e.t == t, 'WRONGTYPE ' .. k); return e.v end
local C = {}
function C.GET(k) local e = live(k); if e == nil then return false end; assert(e.t == 'string', 'WRONGTYPE ' .. k); return e.v end
function C.MGET(...) local out = {}; for i, k in ipairs({...}) do local e = live(k); out[i] = e and e.t == 'string' and e.v or false end; return out end
function C.SET(k, v) DB[k] = { t = 'string', v = tostring(v) }; return 'OK' end
function C.DEL(k) DB[k] = nil; return 1 end
function C.EXISTS(...) local n = 0; for _, k in ipairs({...}) do if live(k) then n = n + 1 end end; return n end
function C.PEXPIRE(k, ms) local e = live(k); if e then e.exp = CLOCK + tonumber(ms) end; return e and 1 or 0 end
function C.TYPE(k) return { ok = kind(k) } end
function C.INCRBY(k, by) local v = tonumber(C.GET(k) or '0') + tonumber(by); C.SET(k, tostring(v)); return v end
function C.HGET(k, f) local h = get(k, 'hash'); return h and h[f] or false end
function C.HMGET(k, ...) local h, out = get(k, 'hash'), {}; for i, f in ipairs({...}) do out[i] = h and h[f] or false end; return out end
function C.HGETALL(k) local h, out = get(k, 'hash'), {}; for f, v in pairs(h or {}) do out[#out + 1] = f; out[#out + 1] = v end; return out end
function C.HSET(k, ...) local a, h = {...}, need(k, 'hash'); for i = 1, #a, 2 do h[a[i]] = tostring(a[i + 1]) end; return 1 end
function C.HDEL(k, ...) local h = get(k, 'hash'); if h then for _, f in ipairs({...}) do h[f] = nil end; if next(h) == nil then DB[k] = nil end end; return 1 end
function C.HINCRBY(k, f, by) local h = need(k, 'hash'); local v = tonumber(h[f] or '0') + tonumber(by); h[f] = tostring(v); return v end
function C.RPUSH(k, v) local l = need(k, 'list'); l[#l + 1] = v; return #l end
function C.LPOP(k) local l = get(k, 'list'); if not l then return false end; local v = table.remove(l, 1); return v end
function C.LINDEX(k, i) local l = get(k, 'list'); return l and l[i + 1] or false end
function C.SADD(k, m) need(k, 'set')[m] = true; return 1 end
function C.SREM(k, m) local s = get(k, 'set'); if s then s[m] = nil end; return 1 end
function C.ZMSCORE(k, ...) local z, out = get(k, 'zset'), {}; for i, m in ipairs({...}) do out[i] = z and z[m] and tostring(z[m]) or false end; return out end
function C.ZREMRANGEBYSCORE(k) return 0 end
PUBLISHED = {}
function C.PUBLISH(channel, message) PUBLISHED[#PUBLISHED + 1] = message; return 0 end
function C.TIME() return { tostring(CLOCK // 1000), tostring((CLOCK % 1000) * 1000) } end
redis = {
  call = function(cmd, ...) local f = C[cmd]; assert(f, 'the fake Redis has no ' .. cmd); CALLS[cmd] = (CALLS[cmd] or 0) + 1; return f(...) end,
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

    /// Commits `overlay` for `owner`, which holds `locked` (key, exclusive).
    fn commit(&self, overlay: &Overlay, owner: Option<&str>, locked: &[(&str, bool)]) -> i64 {
        self.commit_answer(overlay, owner, locked).0
    }

    fn commit_answer(&self, overlay: &Overlay, owner: Option<&str>, locked: &[(&str, bool)]) -> (i64, String) {
        let locked = locks(locked);
        let changes = Changes { expected_active: Some(NS), ns: NS, guard: Guard::None, overlay, owner, locked: &locked };
        self.eval(COMMIT_SCRIPT, commit_args(SVC, &changes, &commit_ops(overlay), &overlay.type_checks()))
    }

    /// Locks `reads` for `owner`, `exclusive` of them exclusively.
    fn lock(&self, reads: &HashMap<String, u64>, exclusive: &[&str], owner: &str) -> i64 {
        let exclusive: Vec<String> = exclusive.iter().map(|k| k.to_string()).collect();
        self.eval(LOCK_SCRIPT, lock_args(NS, reads, &exclusive, owner)).0
    }

    fn unlock(&self, owner: &str, locked: &[(&str, bool)]) {
        self.lua.globals().set("ARGV", vec![lock_fields(NS, owner, &locks(locked)).to_string()]).unwrap();
        self.lua.load(UNLOCK_SCRIPT).exec().expect("the script runs");
    }

    fn advance(&self, by: Duration) {
        self.lua.load(format!("CLOCK = CLOCK + {}", by.as_millis())).exec().unwrap();
    }

    /// How many times the scripts called `cmd` so far.
    fn calls(&self, cmd: &str) -> u64 {
        self.lua.load(format!("return CALLS[{cmd:?}] or 0")).eval().unwrap()
    }

    /// The owners of shared locks on `key`.
    fn readers(&self, key: &str) -> Vec<String> {
        let v: Value = self.lua.load(format!("return redis.call('HGETALL', {:?})", read_locks_key(NS, key))).eval().unwrap();
        let Value::Table(t) = v else { return Vec::new() };
        let flat: Vec<String> = t.sequence_values::<String>().map(Result::unwrap).collect();
        let mut owners: Vec<String> = flat.chunks(2).map(|p| p[0].clone()).collect();
        owners.sort();
        owners
    }

    /// Reads script key `key` as a handler does: its value and the revision it depends on.
    fn read(&self, key: &str) -> (i64, u64) {
        let v = self.get(&script_key(NS, key)).map_or(0, |v| v.parse().unwrap());
        let rev = self.hget(&revisions_key(NS), key).map_or(0, |r| r.parse().unwrap());
        (v, rev)
    }
}

fn locks(held: &[(&str, bool)]) -> Locks {
    held.iter().map(|(k, x)| (k.to_string(), *x)).collect()
}

const SVC: &str = "svc";
const NS: &str = "{svc}@1";

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

fn count_read(revision: u64) -> HashMap<String, u64> {
    [("count".to_string(), revision)].into()
}

#[test]
fn an_exclusive_lock_taken_before_a_send_holds_writers_and_readers_off_until_its_commit() {
    let r = fake();
    assert_eq!(r.lock(&count_read(0), &["count"], "a"), 1);
    // A writer of the locked key waits (Locked), whoever it is; so does a reader about to send.
    assert_eq!(r.commit(&rmw("count", 5, 0), Some("b"), &[]), -4);
    assert_eq!(r.lock(&count_read(0), &[], "b"), -4, "a reader is refused while a writer holds");
    assert_eq!(r.lock(&count_read(0), &["count"], "b"), -4);
    // The holder commits and releases.
    assert_eq!(r.commit(&rmw("count", 1, 0), Some("a"), &[("count", true)]), 1);
    assert_eq!(r.read("count"), (1, 1));
    assert!(r.hget(&locks_key(NS), "count").is_none(), "released");
    // A stale lock attempt fails as stale.
    assert_eq!(r.lock(&count_read(0), &[], "b"), -3);
}

#[test]
fn readers_share_a_key_and_hold_writers_off_until_they_commit() {
    let r = fake();
    assert_eq!(r.lock(&count_read(0), &[], "a"), 1);
    assert_eq!(r.lock(&count_read(0), &[], "b"), 1, "two readers of one key both lock");
    assert_eq!(r.readers("count"), ["a", "b"]);
    // A writer is refused while a reader holds: at its lock and at its commit.
    assert_eq!(r.lock(&count_read(0), &["count"], "c"), -4);
    assert_eq!(r.commit_answer(&rmw("count", 5, 0), Some("c"), &[]), (-4, "count".to_string()));
    // A reader that writes its key commits once it is the only reader (b went by its commit,
    // a wrote nothing).
    let mut nothing = Overlay::new();
    nothing.note_read("count", 0);
    assert_eq!(r.commit(&nothing, Some("b"), &[("count", false)]), 1);
    assert_eq!(r.readers("count"), ["a"]);
    assert_eq!(r.commit(&rmw("count", 5, 0), Some("c"), &[]), -4);
    assert_eq!(r.commit(&rmw("count", 1, 0), Some("a"), &[("count", false)]), 1, "its own shared lock does not hold it off");
    assert!(r.readers("count").is_empty(), "released by the commit");
    assert_eq!(r.read("count"), (1, 1));
}

#[test]
fn a_reader_takes_its_key_exclusively_once_the_other_readers_are_gone() {
    let r = fake();
    assert_eq!(r.lock(&count_read(0), &[], "a"), 1);
    assert_eq!(r.lock(&count_read(0), &[], "b"), 1);
    assert_eq!(r.lock(&count_read(0), &["count"], "a"), -4, "b still reads it");
    r.unlock("b", &[("count", false)]);
    assert_eq!(r.readers("count"), ["a"], "released by unlock");
    assert_eq!(r.lock(&count_read(0), &["count"], "a"), 1);
    assert!(r.readers("count").is_empty(), "the shared lock became the exclusive one");
    assert!(r.hget(&locks_key(NS), "count").is_some_and(|l| l.starts_with("a:")));
    r.unlock("a", &[("count", true)]);
    assert!(r.hget(&locks_key(NS), "count").is_none(), "released by unlock");
    assert_eq!(r.commit(&rmw("count", 5, 0), Some("c"), &[]), 1);
}

#[test]
fn a_lock_outlives_nobody_for_ever() {
    let r = fake();
    assert_eq!(r.lock(&count_read(0), &["count"], "a"), 1);
    r.advance(LOCK_TTL + Duration::from_millis(1));
    assert_eq!(r.commit(&rmw("count", 5, 0), Some("b"), &[]), 1, "an expired lock (its owner died) holds nobody off");
    assert!(r.hget(&locks_key(NS), "count").is_none(), "and goes");
    // Shared locks too; the expired entries go.
    assert_eq!(r.lock(&count_read(1), &[], "a"), 1);
    r.advance(LOCK_TTL / 2);
    assert_eq!(r.lock(&count_read(1), &[], "b"), 1);
    r.advance(LOCK_TTL / 2 + Duration::from_millis(1));
    assert_eq!(r.commit(&rmw("count", 6, 1), Some("c"), &[]), -4, "b's lock is still valid");
    assert_eq!(r.readers("count"), ["b"], "a's expired lock was cleaned up");
    r.advance(LOCK_TTL / 2);
    assert_eq!(r.commit(&rmw("count", 6, 1), Some("c"), &[]), 1);
    assert!(r.readers("count").is_empty(), "the hash went with its last lock");
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

#[test]
fn types_are_checked_before_anything_is_written_unless_a_read_proved_them() {
    let r = fake();
    r.set(&script_key(NS, "s"), "\"text\"");
    // A hash write onto a string nobody read: refused before the first write.
    let mut o = Overlay::new();
    o.set("first", &script_key(NS, "first"), "1".into());
    o.hset("s", &script_key(NS, "s"), "f", "1".into()).unwrap();
    let (code, message) = r.commit_answer(&o, None, &[]);
    assert_eq!(code, i64::MIN, "an error");
    assert!(message.contains("WRONGTYPE key {svc}@1:s holds a string"), "{message}");
    assert_eq!(r.get(&script_key(NS, "first")), None, "nothing written");
    assert_eq!(r.calls("TYPE"), 1);
    // A key the call read as a hash (its revision checked at commit) needs no look at its type;
    // one it did not read does.
    let mut o = Overlay::new();
    o.note_read(&whole_revision("h"), 0);
    o.note_read(&field_revision("h", "a"), 0);
    o.note_type("h", "hash");
    o.hset("h", &script_key(NS, "h"), "a", "1".into()).unwrap();
    o.hincr("h", &script_key(NS, "h"), "n", 2, Some(0)).unwrap();
    o.rpush("l", &script_key(NS, "l"), "1".into()).unwrap();
    assert_eq!(o.type_checks(), [(script_key(NS, "l"), "list")]);
    assert_eq!(r.commit(&o, None, &[]), 1);
    assert_eq!(r.calls("TYPE"), 2);
    assert_eq!(r.hget(&script_key(NS, "h"), "n").as_deref(), Some("2"));
}

#[test]
fn version_notes_keep_the_highest_in_one_write() {
    let r = fake();
    let versions = versions_key(NS);
    let mut o = Overlay::new();
    o.note_version(&versions, "acc-1", 3);
    o.note_version(&versions, "acc-2", 7);
    o.note_version(&versions, "acc-1", 5);
    o.note_version(&versions, "acc-1", 4);
    assert_eq!(commit_ops(&o), [vec!["VMAX".to_string(), versions.clone(), "acc-1".into(), "5".into(), "acc-2".into(), "7".into()]]);
    assert_eq!(r.commit(&o, None, &[]), 1);
    let mut lower = Overlay::new();
    lower.note_version(&versions, "acc-1", 2);
    lower.note_version(&versions, "acc-2", 8);
    assert_eq!(r.commit(&lower, None, &[]), 1);
    assert_eq!(r.hget(&versions, "acc-1").as_deref(), Some("5"), "never lowered");
    assert_eq!(r.hget(&versions, "acc-2").as_deref(), Some("8"));
    assert_eq!(r.calls("HSET"), 2, "one write per commit");
}

#[test]
fn a_frozen_namespace_holds_commits_and_a_commit_wakes_the_waits_on_what_it_wrote() {
    let r = fake();
    r.set(&swap_freeze_key(SVC), "{svc}@2");
    assert_eq!(r.commit(&rmw("count", 1, 0), None, &[]), -2);
    r.lua.load(format!("DB[{:?}] = nil", swap_freeze_key(SVC))).exec().unwrap();
    // Waits on count (valid) and on other (past its deadline).
    r.lua.load(format!("DB[{:?}] = {{ t = 'zset', v = {{ count = CLOCK + 1000, other = CLOCK - 1 }} }}", watch_key(SVC))).exec().unwrap();
    let mut o = rmw("count", 1, 0);
    o.set("other", &script_key(NS, "other"), "1".into());
    assert_eq!(r.commit(&o, None, &[]), 1);
    let published: Vec<String> = r.lua.load("return PUBLISHED").eval().unwrap();
    assert_eq!(published, ["count"]);
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
