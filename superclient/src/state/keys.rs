//! Where a service's state lives in Redis (`<svc>` = service type, `<ns>` = `{<svc>}@<generation>`):
//!
//! | key | what |
//! |---|---|
//! | `sequent:{<svc>}:active` | name of the active namespace, e.g. `{accounts}@3` |
//! | `sequent:{<svc>}:generation` | counter for new namespaces |
//! | `sequent:{<svc>}:rebuild-lock` | instance doing the automatic initial rebuild (expires) |
//! | `sequent:{<svc>}:rebuild` | hash: a rebuild an operator asked for, and its progress ([`super::rebuilds`]) |
//! | `sequent:{<svc>}:swap-freeze` | rebuilt namespace catching up right before its swap: commits to the active one wait (expires) |
//! | `sequent:{<svc>}:watch` | sorted set: script keys some `bus:wait` watches, scored by the wait's deadline (ms) |
//! | channel `sequent:{<svc>}:commits` | pub/sub: the watched keys a commit wrote (wakes `bus:wait`) |
//! | `<ns>:<key>` | the script's own keys (`redis:set("acc-1", ...)`) |
//! | `<ns>:__applied:<p>` | stream sequence of the last event of partition `p` applied |
//! | `<ns>:__partitions` | the partition count the checkpoints are for ([`super::migrate::repartition`]) |
//! | `<ns>:__versions` | hash: event key → last version this service knows of (for `expect = false`) |
//! | `<ns>:__rev` | hash: script key → how many commits wrote it (reads are checked against it at commit) |
//! | `<ns>:__locks` | hash: script key → `<owner>:<deadline ms>`, exclusive lock of a call that read and wrote it, held from a send decided on it until its commit |
//! | `<ns>:__locks:r:<key>` | hash: owner → deadline ms, shared locks of calls that only read `<key>` before a send (expires with its last lock) |
//! | `<ns>:__parked` | set of parked keys |
//! | `<ns>:__parked:<key>` | JSON: why and where the key is parked |
//! | `<ns>:__held:<key>` | list of stream sequences of the key not yet applied (head = parked one) |
//! | `<ns>:__release` | set of keys an operator asked to release |
//! | `sequent:{<svc>}:partitioned` | partitioned state only: its partition count (set by the swap; read by tools) |
//! | `sequent:{<svc>.<p>}:active`, `:swap-freeze`, `:watch` | partitioned state only: partition `p`'s own copy of the pointer (`{<svc>.<p>}@<g>`), freeze and watch set |
//!
//! Every key of a service carries the Redis Cluster hash tag `{<svc>}` (the first `{...}` of a
//! key name picks its slot), so all of them share one slot: a commit touches the active
//! pointer, the freeze, the script's keys of any name and the checkpoint in one script, a read
//! looks at the active pointer in the same transaction, and a swap compares two namespaces,
//! which Redis Cluster allows only within one slot. Different services hash to different
//! slots, so services spread over a cluster's shards; one service's state is on one shard
//! (SCALING.md says why and where that stops). On a single Redis the tag changes nothing.
//!
//! Partitioned state (`bus:register(name, {state = "partitioned"})`): `{<svc>}@<g>` names the
//! generation, and every `<ns>` key above is kept per partition, in namespace `{<svc>.<p>}@<g>`
//! ([`partition_namespace`]) with its own slot, beside the partition's own pointer, freeze and
//! watch set ([`slot_key`]). A script key is in the partition of its hash tag read as an event
//! key, or of its whole name without one ([`key_partition`]); `__versions` entries are in the
//! partition of their event key. The generation counter, rebuild lock and request, the
//! service's pointer and the commits channel stay in `{<svc>}`.
//!
//! Script keys are mapped so that they never collide with the framework's ([`script_key`]).
//! The layout before hash tags ([`legacy`]) is migrated at start ([`super::migrate`]).

/// `{<svc>}`: the hash tag that puts every key of a service into one cluster slot.
pub fn tag(service: &str) -> String {
    format!("{{{service}}}")
}
/// The namespace of partition `p` of a partitioned service's namespace `ns` (the service's or
/// another partition's): `{<svc>}@<g>` → `{<svc>.<p>}@<g>`, its own hash tag and so its own
/// slot. (Service names have no `.`.)
pub fn partition_namespace(ns: &str, p: u32) -> String {
    match ns.strip_prefix('{').and_then(|rest| rest.split_once("}@")) {
        Some((tag, generation)) => format!("{{{}.{p}}}@{generation}", tag.split('.').next().unwrap_or(tag)),
        None => format!("{ns}.{p}"),
    }
}
/// The partition of a partition namespace (`{<svc>.<p>}@<g>`), None for a service's namespace.
pub fn namespace_partition(ns: &str) -> Option<u32> {
    let (service, _) = ns.strip_prefix('{')?.split_once("}@")?;
    service.rsplit_once('.')?.1.parse().ok()
}
/// Namespace `ns` in generation `generation` (same service, same partition).
pub fn regenerate(ns: &str, generation: u64) -> String {
    format!("{}@{generation}", ns.rsplit_once('@').map_or(ns, |(head, _)| head))
}
/// The namespace a stored key is in (the part before its first `:`; namespaces have none).
pub fn namespace_of_stored(full: &str) -> &str {
    full.split_once(':').map_or(full, |(ns, _)| ns)
}
/// Key `what` beside namespace `ns`, in its slot: `sequent:<ns's tag>:<what>`. For a service's
/// namespace that is [`service_key`]; for a partition's, the partition's own copy (its active
/// pointer, swap freeze and watch set), which its commits check in the same script.
pub fn slot_key(ns: &str, what: &str) -> String {
    format!("sequent:{}:{what}", ns.rsplit_once('@').map_or(ns, |(head, _)| head))
}
/// The hash tag of a key as Redis Cluster finds it: between the first `{` and the first `}`
/// after it, if not empty.
pub fn hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let close = key[open + 1..].find('}')?;
    (close > 0).then(|| &key[open + 1..open + 1 + close])
}
/// The partition of a script key of a partitioned service: that of its hash tag taken as an
/// event key (`count:{acc-1}` is in `acc-1`'s partition), or of its whole name without one
/// (`acc-1` is in the partition of events of key `acc-1`).
pub fn key_partition(key: &str, partitions: u32) -> u32 {
    sequent_protocol::subjects::partition_of(hash_tag(key).unwrap_or(key), partitions)
}
/// The name of namespace `generation` of a service: `{<svc>}@<generation>`.
pub fn namespace(service: &str, generation: u64) -> String {
    format!("{}@{generation}", tag(service))
}
/// The generation of a namespace name (0 if it has none).
pub fn generation_of(ns: &str) -> u64 {
    ns.rsplit_once('@').and_then(|(_, g)| g.parse().ok()).unwrap_or(0)
}
pub fn service_key(service: &str, what: &str) -> String {
    format!("sequent:{}:{what}", tag(service))
}
pub fn active_key(service: &str) -> String {
    service_key(service, "active")
}
pub fn generation_key(service: &str) -> String {
    service_key(service, "generation")
}
pub fn rebuild_lock_key(service: &str) -> String {
    service_key(service, "rebuild-lock")
}
/// Set (to the rebuilt namespace, with an expiry) while a rebuild catches up with live
/// delivery right before its swap: commits to the active namespace wait meanwhile.
pub fn swap_freeze_key(service: &str) -> String {
    service_key(service, "swap-freeze")
}
/// Script keys that routes of some instance wait on (`bus:wait`), scored by deadline.
pub fn watch_key(service: &str) -> String {
    service_key(service, "watch")
}
/// Redis pub/sub channel on which commits announce the watched keys they wrote.
pub fn commits_channel(service: &str) -> String {
    service_key(service, "commits")
}
pub fn applied_key(ns: &str, partition: u32) -> String {
    format!("{ns}:__applied:{partition}")
}
pub fn partitions_key(ns: &str) -> String {
    format!("{ns}:__partitions")
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
/// The shared (read) locks on script key (revision) `key`: owner → deadline ms.
pub fn read_locks_key(ns: &str, key: &str) -> String {
    format!("{ns}:__locks:r:{key}")
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

/// The Redis Cluster slot of a key: CRC16 (XMODEM) of its hash tag (or of the whole key if it
/// has none), modulo 16384, as Redis computes it. For tests and tools that check placement.
pub fn slot(key: &str) -> u16 {
    let mut crc: u16 = 0;
    for &b in hash_tag(key).unwrap_or(key).as_bytes() {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc % 16384
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_as_redis_computes_them() {
        assert_eq!(slot("123456789"), 0x31C3, "the CRC16 check value of Redis's cluster spec");
        assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
        assert_ne!(slot("foo{}{bar}"), slot("bar"), "an empty tag hashes the whole key");
        assert_eq!(slot("foo{{bar}}zap"), slot("{bar"));
    }

    #[test]
    fn every_key_of_a_service_shares_one_slot_and_services_spread() {
        let svc = "accounts";
        let (ns, next) = (namespace(svc, 3), namespace(svc, 4));
        assert_eq!(ns, "{accounts}@3");
        assert_eq!(generation_of(&ns), 3);
        let one = slot(&active_key(svc));
        let all = [
            generation_key(svc),
            rebuild_lock_key(svc),
            swap_freeze_key(svc),
            watch_key(svc),
            applied_key(&ns, 15),
            applied_key(&next, 0),
            partitions_key(&ns),
            versions_key(&ns),
            revisions_key(&ns),
            locks_key(&ns),
            read_locks_key(&ns, "owner:{alice}\u{0}acc-1"),
            parked_set_key(&ns),
            parked_key(&ns, "acc-{9}"),
            held_key(&ns, "acc-1"),
            release_key(&ns),
            script_key(&ns, "balance:acc-1"),
            script_key(&ns, "{other}"),
            script_key(&ns, "__x"),
        ];
        for key in all {
            assert_eq!(slot(&key), one, "{key} is in the service's slot");
        }
        let bank = ["users", "accounts", "transfers", "bfaf", "nectar"].map(|s| slot(&active_key(s)));
        let mut distinct = bank.to_vec();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), bank.len(), "the bank's services hash to different slots: {bank:?}");
    }

    #[test]
    fn a_partitioned_services_partitions_each_have_one_slot() {
        let ns = namespace("ledger", 3);
        let p5 = partition_namespace(&ns, 5);
        assert_eq!(p5, "{ledger.5}@3");
        assert_eq!(partition_namespace(&p5, 5), p5);
        assert_eq!(partition_namespace(&p5, 7), partition_namespace(&ns, 7), "from a partition's namespace to another's");
        assert_eq!(namespace_partition(&p5), Some(5));
        assert_eq!(namespace_partition(&ns), None, "a service's namespace is no partition's");
        assert_eq!(regenerate(&p5, 4), "{ledger.5}@4");
        assert_eq!(regenerate(&ns, 4), namespace("ledger", 4));
        assert_eq!(slot_key(&ns, "active"), active_key("ledger"), "a service's namespace keeps today's keys");
        assert_eq!(slot_key(&p5, "active"), "sequent:{ledger.5}:active");
        let one = slot(&slot_key(&p5, "active"));
        for key in [
            slot_key(&p5, "swap-freeze"),
            slot_key(&p5, "watch"),
            applied_key(&p5, 5),
            versions_key(&p5),
            revisions_key(&p5),
            locks_key(&p5),
            read_locks_key(&p5, "count:{acc-1}"),
            parked_set_key(&p5),
            held_key(&p5, "acc-1"),
            script_key(&p5, "count:{acc-1}"),
            script_key(&regenerate(&p5, 9), "x"),
        ] {
            assert_eq!(slot(&key), one, "{key} is in partition 5's slot");
        }
        assert_eq!(namespace_of_stored(&script_key(&p5, "a:b:c")), p5);
        let slots: std::collections::BTreeSet<u16> = (0..16).map(|p| slot(&slot_key(&partition_namespace(&ns, p), "active"))).collect();
        assert_eq!(slots.len(), 16, "the partitions hash to different slots");
    }

    #[test]
    fn a_script_keys_partition_is_its_hash_tags_as_an_event_key() {
        let of = |k: &str| sequent_protocol::subjects::partition_of(k, 16);
        assert_eq!(hash_tag("count:{acc-1}"), Some("acc-1"));
        assert_eq!(hash_tag("a{}b{c}"), None, "an empty first tag means none, as in Redis");
        assert_eq!(hash_tag("plain"), None);
        assert_eq!(key_partition("count:{acc-1}", 16), of("acc-1"));
        assert_eq!(key_partition("{acc-1}", 16), of("acc-1"));
        assert_eq!(key_partition("acc-1", 16), of("acc-1"), "a key without a tag: its whole name");
        assert_eq!(key_partition("balance:acc-1", 16), of("balance:acc-1"));
        let spread: std::collections::BTreeSet<u32> = (0..200).map(|i| key_partition(&format!("n:{{k-{i}}}"), 16)).collect();
        assert_eq!(spread.len(), 16);
    }

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
