//! The write overlay: the Redis writes of a call (or of a batch of handler calls) buffered until
//! they commit in one script, with what the calls' own reads must see of them.
//!
//! Rules, each a unit test below:
//! - a read sees the overlay's writes: a value set here, a delete, fields of a hash, pushes
//!   onto a list, members added or removed; what the overlay does not decide comes from Redis
//!   and is merged (a stored hash with fields set here, a stored list with pushes here);
//! - an increment over a value never read here stays relative (`INCRBY` at commit), so that it
//!   adds to what Redis holds then; once the value was read or set here it is absolute;
//! - a key used as one Redis type cannot be used as another in the same overlay (deleting it
//!   first is fine): the mistake fails at once, in the script, not at commit;
//! - [`Overlay::mark`] and [`Overlay::rollback`] undo everything since the mark (writes, reads,
//!   known versions): a failing handler in the middle of a batch leaves no trace;
//! - reads from Redis are recorded with the key's revision, checked at commit; a read also
//!   proves the key's Redis type (a GET that did not fail: a string or nothing), which holds as
//!   long as the read does (any write that can change a key's type moves the revision the read
//!   depends on), so the commit checks types only of keys written unread ([`Overlay::type_checks`]);
//! - [`Overlay::settle`] after a commit keeps only what states values Redis now holds (a read
//!   cache for a rebuild's next batch).

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One Redis command, full key names: `["HSET", "accounts@3:account:acc-1", "f", "v"]`.
pub type Cmd = Vec<String>;

/// What the overlay knows of one script key.
#[derive(Debug, Clone, PartialEq)]
enum Known {
    /// Deleted here: nothing of Redis shows through, whatever its type was.
    Gone,
    /// A string value set here (JSON text).
    Value(String),
    /// A string incremented by this much over a base never read here.
    Incr(i64),
    Hash { cleared: bool, fields: HashMap<String, Field> },
    List { cleared: bool, pushed: Vec<String> },
    Set { cleared: bool, added: BTreeSet<String>, removed: BTreeSet<String> },
}

#[derive(Debug, Clone, PartialEq)]
enum Field {
    Value(String),
    Deleted,
    Incr(i64),
}

impl Known {
    fn type_name(&self) -> Option<&'static str> {
        match self {
            Known::Gone => None,
            Known::Value(_) | Known::Incr(_) => Some("string"),
            Known::Hash { .. } => Some("hash"),
            Known::List { .. } => Some("list"),
            Known::Set { .. } => Some("set"),
        }
    }
}

/// What a read of a string key must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StrView {
    /// Decided here: this value (None: absent).
    Local(Option<String>),
    /// Read Redis and add this increment.
    Over(i64),
    /// Read Redis.
    Stored,
}

/// A position to roll back to.
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    ops: usize,
    undo: usize,
}

#[derive(Debug)]
enum Undo {
    Entry { key: String, prev: Option<Known> },
    Field { key: String, field: String, prev: Option<Field> },
    Read { key: String },
    Proof { key: String },
    Version { key: String, prev: Option<u64> },
}

/// Buffered writes with read-your-writes; see the module docs.
#[derive(Debug, Default)]
pub struct Overlay {
    ops: Vec<Cmd>,
    known: HashMap<String, Known>,
    /// Script keys read from Redis → their revision then (the first read counts).
    reads: HashMap<String, u64>,
    /// Script keys whose Redis type a read proved: key → the type (or no key at all).
    proven: HashMap<String, &'static str>,
    /// Full Redis name → script key, of the keys written here (framework ops are not in it).
    names: HashMap<String, String>,
    /// Event key → the highest version learnt here (for `expect = false`).
    versions: HashMap<String, u64>,
    /// Written once the first mark is taken: a rebuild never rolls back and pays nothing.
    undo: Option<Vec<Undo>>,
    /// Keys that may hold something relative to what Redis held (increments, pushes), for
    /// [`Overlay::settle`], which then looks at these and not at every key it knows.
    relative: Vec<String>,
}

pub type TypeError = String;

impl Overlay {
    pub fn new() -> Overlay {
        Overlay::default()
    }

    /// Commands to run at commit, in order.
    pub fn ops(&self) -> &[Cmd] {
        &self.ops
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Script keys this overlay wrote (their revisions move at commit).
    pub fn written(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.known.keys().cloned().collect();
        keys.sort();
        keys
    }

    /// The revisions this overlay's writes move at commit (see `keys::Depends`): every written
    /// key's own; for hash fields written one by one, those fields'; for anything else, the
    /// whole key's.
    pub fn revisions_written(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (k, known) in &self.known {
            out.push(k.clone());
            match known {
                Known::Hash { cleared: false, fields } => out.extend(fields.keys().map(|f| super::keys::field_revision(k, f))),
                Known::Hash { cleared: true, fields } => {
                    out.push(super::keys::whole_revision(k));
                    out.extend(fields.keys().map(|f| super::keys::field_revision(k, f)));
                }
                _ => out.push(super::keys::whole_revision(k)),
            }
        }
        out.sort();
        out
    }

    /// Revisions read from Redis, with the value each had when read.
    pub fn reads(&self) -> &HashMap<String, u64> {
        &self.reads
    }

    /// How many keys the overlay knows of (a rebuild bounds its read cache with it).
    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn mark(&mut self) -> Mark {
        let undo = self.undo.get_or_insert_with(Vec::new);
        Mark { ops: self.ops.len(), undo: undo.len() }
    }

    /// Undoes everything done since `mark`.
    pub fn rollback(&mut self, mark: Mark) {
        self.ops.truncate(mark.ops);
        let Some(undo) = self.undo.as_mut() else { return };
        while undo.len() > mark.undo {
            match undo.pop().expect("longer than the mark") {
                Undo::Entry { key, prev } => match prev {
                    Some(k) => {
                        self.known.insert(key, k);
                    }
                    None => {
                        self.known.remove(&key);
                    }
                },
                Undo::Field { key, field, prev } => {
                    if let Some(Known::Hash { fields, .. }) = self.known.get_mut(&key) {
                        match prev {
                            Some(f) => fields.insert(field, f),
                            None => fields.remove(&field),
                        };
                    }
                }
                Undo::Read { key } => {
                    self.reads.remove(&key);
                }
                Undo::Proof { key } => {
                    self.proven.remove(&key);
                }
                Undo::Version { key, prev } => match prev {
                    Some(v) => {
                        self.versions.insert(key, v);
                    }
                    None => {
                        self.versions.remove(&key);
                    }
                },
            }
        }
    }

    fn name(&mut self, key: &str, full: &str) {
        if !self.names.contains_key(full) {
            self.names.insert(full.to_string(), key.to_string());
        }
    }

    fn remember(&mut self, key: &str, full: &str) {
        self.name(key, full);
        if let Some(undo) = self.undo.as_mut() {
            undo.push(Undo::Entry { key: key.to_string(), prev: self.known.get(key).cloned() });
        }
    }

    fn remember_field(&mut self, key: &str, full: &str, field: &str) {
        self.name(key, full);
        let Some(undo) = self.undo.as_mut() else { return };
        match self.known.get(key) {
            Some(Known::Hash { fields, .. }) => {
                undo.push(Undo::Field { key: key.to_string(), field: field.to_string(), prev: fields.get(field).cloned() })
            }
            prev => undo.push(Undo::Entry { key: key.to_string(), prev: prev.cloned() }),
        }
    }

    /// Fails if `key` is known here as another type than `want`.
    pub fn check_type(&self, key: &str, want: &'static str) -> Result<(), TypeError> {
        match self.known.get(key).and_then(Known::type_name) {
            Some(t) if t != want => Err(format!("key {key:?} was written as a {t} here; it cannot be used as a {want}")),
            _ => Ok(()),
        }
    }

    /// Records that revision `key` (see `keys::Depends`) was read at `revision` (the first read
    /// counts).
    pub fn note_read(&mut self, key: &str, revision: u64) {
        if !self.reads.contains_key(key) {
            self.reads.insert(key.to_string(), revision);
            if let Some(undo) = self.undo.as_mut() {
                undo.push(Undo::Read { key: key.to_string() });
            }
        }
    }

    /// Records that a read of script key `key` (whose revision was noted) proved its type:
    /// `want` (a Redis type name) or no key at all. Kept as long as the read is.
    pub fn note_type(&mut self, key: &str, want: &'static str) {
        if !self.proven.contains_key(key) {
            self.proven.insert(key.to_string(), want);
            if let Some(undo) = self.undo.as_mut() {
                undo.push(Undo::Proof { key: key.to_string() });
            }
        }
    }

    /// Forgets the reads (they were of a namespace the call no longer reads).
    pub fn forget_reads(&mut self) {
        self.reads.clear();
        self.proven.clear();
    }

    /// The keys (full names) whose type the commit must check before it writes anything, and
    /// the type each must have (or be absent): Redis does not roll back a script that fails
    /// midway. Only script keys whose first command here can fail on another type (not SET or
    /// DEL) and whose type no read of this overlay proved; framework keys (held lists, the
    /// versions hash) have one type by construction. Integers need no check: `incr` and
    /// `hincr` read the value they add to (and fail on a non-integer) unless this overlay
    /// decided it, and the commit checks that read.
    pub fn type_checks(&self) -> Vec<(String, &'static str)> {
        let mut decided = std::collections::HashSet::new();
        let mut out = Vec::new();
        for op in &self.ops {
            let Some(key) = self.names.get(&op[1]) else { continue };
            let want = match op[0].as_str() {
                "SET" | "DEL" => None,
                "HSET" | "HDEL" | "HINCRBY" => Some("hash"),
                "RPUSH" => Some("list"),
                "INCRBY" => Some("string"),
                "SADD" | "SREM" => Some("set"),
                _ => continue,
            };
            if !decided.insert(op[1].as_str()) {
                continue;
            }
            if let Some(want) = want.filter(|w| self.proven.get(key) != Some(w)) {
                out.push((op[1].clone(), want));
            }
        }
        out
    }

    /// A framework command (held lists, parking) that commits with the writes.
    pub fn push_op(&mut self, cmd: Cmd) {
        self.ops.push(cmd);
    }

    // ----------------------------------------------------------------------------- strings

    pub fn string(&self, key: &str) -> StrView {
        match self.known.get(key) {
            Some(Known::Value(v)) => StrView::Local(Some(v.clone())),
            Some(Known::Incr(d)) => StrView::Over(*d),
            Some(Known::Gone) => StrView::Local(None),
            Some(_) => StrView::Local(None),
            None => StrView::Stored,
        }
    }

    pub fn set(&mut self, key: &str, full: &str, json: String) {
        self.remember(key, full);
        self.ops.push(vec!["SET".into(), full.to_string(), json.clone()]);
        self.known.insert(key.to_string(), Known::Value(json));
    }

    pub fn del(&mut self, key: &str, full: &str) {
        self.remember(key, full);
        self.ops.push(vec!["DEL".into(), full.to_string()]);
        self.known.insert(key.to_string(), Known::Gone);
    }

    /// Adds `by` to a string integer. `base`: the value before, when the caller read it from
    /// Redis (None when the overlay decides it). Returns the new value.
    pub fn incr(&mut self, key: &str, full: &str, by: i64, base: Option<i64>) -> Result<i64, TypeError> {
        self.check_type(key, "string")?;
        let (value, next) = match (self.known.get(key), base) {
            (Some(Known::Value(v)), _) => {
                let n = parse_int(v)?.checked_add(by).ok_or("integer overflow")?;
                (n, Known::Value(n.to_string()))
            }
            (Some(Known::Gone), _) => (by, Known::Value(by.to_string())),
            (Some(Known::Incr(d)), Some(b)) => (b.checked_add(d + by).ok_or("integer overflow")?, Known::Incr(d + by)),
            (_, Some(b)) => (b.checked_add(by).ok_or("integer overflow")?, Known::Incr(by)),
            (_, None) => return Err(format!("incr of {key:?} needs the stored value")),
        };
        self.remember(key, full);
        self.relative.push(key.to_string());
        self.ops.push(vec!["INCRBY".into(), full.to_string(), by.to_string()]);
        self.known.insert(key.to_string(), next);
        Ok(value)
    }

    /// Whether `key` exists as far as the overlay decides (None: ask Redis).
    pub fn exists(&self, key: &str) -> Option<bool> {
        self.key_states().get(key).copied()
    }

    // ------------------------------------------------------------------------------ hashes

    /// A hash field as the overlay decides it.
    pub fn hash_field(&self, key: &str, field: &str) -> StrView {
        match self.known.get(key) {
            Some(Known::Hash { cleared, fields }) => match fields.get(field) {
                Some(Field::Value(v)) => StrView::Local(Some(v.clone())),
                Some(Field::Deleted) => StrView::Local(None),
                Some(Field::Incr(d)) if *cleared => StrView::Local(Some(d.to_string())),
                Some(Field::Incr(d)) => StrView::Over(*d),
                None if *cleared => StrView::Local(None),
                None => StrView::Stored,
            },
            Some(Known::Gone) => StrView::Local(None),
            Some(_) => StrView::Local(None),
            None => StrView::Stored,
        }
    }

    fn hash_entry(&mut self, key: &str) -> &mut HashMap<String, Field> {
        let entry = self.known.entry(key.to_string()).or_insert_with(|| Known::Hash { cleared: false, fields: HashMap::new() });
        if !matches!(entry, Known::Hash { .. }) {
            *entry = Known::Hash { cleared: true, fields: HashMap::new() };
        }
        match entry {
            Known::Hash { fields, .. } => fields,
            _ => unreachable!("just made a hash"),
        }
    }

    pub fn hset(&mut self, key: &str, full: &str, field: &str, json: String) -> Result<(), TypeError> {
        self.check_type(key, "hash")?;
        self.remember_field(key, full, field);
        self.ops.push(vec!["HSET".into(), full.to_string(), field.to_string(), json.clone()]);
        self.hash_entry(key).insert(field.to_string(), Field::Value(json));
        Ok(())
    }

    pub fn hdel(&mut self, key: &str, full: &str, field: &str) -> Result<(), TypeError> {
        self.check_type(key, "hash")?;
        self.remember_field(key, full, field);
        self.ops.push(vec!["HDEL".into(), full.to_string(), field.to_string()]);
        self.hash_entry(key).insert(field.to_string(), Field::Deleted);
        Ok(())
    }

    /// Adds `by` to a hash field; `base` as for [`Overlay::incr`]. Returns the new value.
    pub fn hincr(&mut self, key: &str, full: &str, field: &str, by: i64, base: Option<i64>) -> Result<i64, TypeError> {
        self.check_type(key, "hash")?;
        let (value, next) = match (self.hash_field(key, field), base) {
            (StrView::Local(Some(v)), _) => {
                let n = parse_int(&v)?.checked_add(by).ok_or("integer overflow")?;
                (n, Field::Value(n.to_string()))
            }
            (StrView::Local(None), _) => (by, Field::Value(by.to_string())),
            (StrView::Over(d), Some(b)) => (b.checked_add(d + by).ok_or("integer overflow")?, Field::Incr(d + by)),
            (StrView::Stored, Some(b)) => (b.checked_add(by).ok_or("integer overflow")?, Field::Incr(by)),
            (_, None) => return Err(format!("hincr of {key:?} needs the stored value")),
        };
        self.remember_field(key, full, field);
        self.relative.push(key.to_string());
        self.ops.push(vec!["HINCRBY".into(), full.to_string(), field.to_string(), by.to_string()]);
        self.hash_entry(key).insert(field.to_string(), next);
        Ok(value)
    }

    /// Whether HGETALL must read Redis for `key`.
    pub fn hash_needs_stored(&self, key: &str) -> bool {
        matches!(self.known.get(key), None | Some(Known::Hash { cleared: false, .. }))
    }

    /// The hash `stored` (what Redis holds) with the overlay applied.
    pub fn hash_merged(&self, key: &str, mut stored: BTreeMap<String, String>) -> Result<BTreeMap<String, String>, TypeError> {
        match self.known.get(key) {
            Some(Known::Hash { cleared, fields }) => {
                if *cleared {
                    stored.clear();
                }
                for (f, v) in fields {
                    match v {
                        Field::Value(v) => {
                            stored.insert(f.clone(), v.clone());
                        }
                        Field::Deleted => {
                            stored.remove(f);
                        }
                        Field::Incr(d) => {
                            let base = stored.get(f).map(|v| parse_int(v)).transpose()?.unwrap_or(0);
                            stored.insert(f.clone(), (base + d).to_string());
                        }
                    }
                }
                Ok(stored)
            }
            Some(_) => Ok(BTreeMap::new()),
            None => Ok(stored),
        }
    }

    // ------------------------------------------------------------------------------- lists

    pub fn rpush(&mut self, key: &str, full: &str, json: String) -> Result<(), TypeError> {
        self.check_type(key, "list")?;
        self.remember(key, full);
        self.relative.push(key.to_string());
        self.ops.push(vec!["RPUSH".into(), full.to_string(), json.clone()]);
        match self.known.entry(key.to_string()).or_insert_with(|| Known::List { cleared: false, pushed: Vec::new() }) {
            Known::List { pushed, .. } => pushed.push(json),
            other => *other = Known::List { cleared: true, pushed: vec![json] },
        }
        Ok(())
    }

    /// `(cleared, pushed)`: whether Redis's list shows through, and what this overlay appended.
    pub fn list(&self, key: &str) -> Option<(bool, &[String])> {
        match self.known.get(key) {
            Some(Known::List { cleared, pushed }) => Some((*cleared, pushed)),
            Some(_) => Some((true, &[])),
            None => None,
        }
    }

    // -------------------------------------------------------------------------------- sets

    fn set_entry(&mut self, key: &str) -> (&mut BTreeSet<String>, &mut BTreeSet<String>) {
        let entry =
            self.known.entry(key.to_string()).or_insert_with(|| Known::Set { cleared: false, added: BTreeSet::new(), removed: BTreeSet::new() });
        if !matches!(entry, Known::Set { .. }) {
            *entry = Known::Set { cleared: true, added: BTreeSet::new(), removed: BTreeSet::new() };
        }
        match entry {
            Known::Set { added, removed, .. } => (added, removed),
            _ => unreachable!("just made a set"),
        }
    }

    pub fn sadd(&mut self, key: &str, full: &str, member: String) -> Result<(), TypeError> {
        self.check_type(key, "set")?;
        self.remember(key, full);
        self.ops.push(vec!["SADD".into(), full.to_string(), member.clone()]);
        let (added, removed) = self.set_entry(key);
        removed.remove(&member);
        added.insert(member);
        Ok(())
    }

    pub fn srem(&mut self, key: &str, full: &str, member: String) -> Result<(), TypeError> {
        self.check_type(key, "set")?;
        self.remember(key, full);
        self.ops.push(vec!["SREM".into(), full.to_string(), member.clone()]);
        let (added, removed) = self.set_entry(key);
        added.remove(&member);
        removed.insert(member);
        Ok(())
    }

    /// Whether `member` is in the set as far as the overlay decides (None: ask Redis).
    pub fn sismember(&self, key: &str, member: &str) -> Option<bool> {
        match self.known.get(key) {
            Some(Known::Set { cleared, added, removed }) => {
                if added.contains(member) {
                    Some(true)
                } else if removed.contains(member) || *cleared {
                    Some(false)
                } else {
                    None
                }
            }
            Some(_) => Some(false),
            None => None,
        }
    }

    /// Whether SMEMBERS must read Redis for `key`.
    pub fn set_needs_stored(&self, key: &str) -> bool {
        matches!(self.known.get(key), None | Some(Known::Set { cleared: false, .. }))
    }

    pub fn set_merged(&self, key: &str, mut stored: BTreeSet<String>) -> BTreeSet<String> {
        match self.known.get(key) {
            Some(Known::Set { cleared, added, removed }) => {
                if *cleared {
                    stored.clear();
                }
                stored.retain(|m| !removed.contains(m));
                stored.extend(added.iter().cloned());
                stored
            }
            Some(_) => BTreeSet::new(),
            None => stored,
        }
    }

    // ---------------------------------------------------------------------------- any key

    /// Keys this overlay created (true) or deleted (false), for `redis:keys` and `exists`.
    pub fn key_states(&self) -> HashMap<&str, bool> {
        let mut out = HashMap::new();
        for (k, known) in &self.known {
            let state = match known {
                Known::Gone => Some(false),
                Known::Value(_) => Some(true),
                Known::Incr(_) => Some(true),
                Known::Hash { cleared, fields } => {
                    let live = fields.values().any(|f| !matches!(f, Field::Deleted));
                    (live || *cleared).then_some(live)
                }
                Known::List { cleared, pushed } => (!pushed.is_empty() || *cleared).then_some(!pushed.is_empty()),
                Known::Set { cleared, added, .. } => (!added.is_empty() || *cleared).then_some(!added.is_empty()),
            };
            if let Some(s) = state {
                out.insert(k.as_str(), s);
            }
        }
        out
    }

    // -------------------------------------------------------------------- event versions

    /// Remembers that event key `key` reached `version`; the commit keeps the maximum in
    /// `versions_full` (the namespace's `__versions` hash).
    pub fn note_version(&mut self, versions_full: &str, key: &str, version: u64) {
        self.ops.push(vec!["VMAX".into(), versions_full.to_string(), key.to_string(), version.to_string()]);
        let prev = self.versions.get(key).copied();
        if prev.is_none_or(|old| version > old) {
            if let Some(undo) = self.undo.as_mut() {
                undo.push(Undo::Version { key: key.to_string(), prev });
            }
            self.versions.insert(key.to_string(), version);
        }
    }

    /// The highest version of event key `key` learnt here.
    pub fn known_version(&self, key: &str) -> Option<u64> {
        self.versions.get(key).copied()
    }

    /// Points the version notes (`VMAX`) at the hashes of namespace generation `generation`
    /// (each stays in its partition). False (nothing changed) if there are other writes, which
    /// belong to the state they were decided on.
    pub fn move_version_notes(&mut self, generation: u64) -> bool {
        if !self.ops.iter().all(|op| op[0] == "VMAX") || !self.known.is_empty() {
            return false;
        }
        for op in self.ops.iter_mut() {
            op[1] = super::keys::versions_key(&super::keys::regenerate(super::keys::namespace_of_stored(&op[1]), generation));
        }
        true
    }

    // --------------------------------------------------------------------------- settling

    /// After the ops committed: drops them, the reads, and what is relative to what Redis held
    /// before (increments over an unread base, pushes onto an unread list), which would count
    /// twice. What is left states values Redis now holds. Returns whether it forgot anything
    /// written: reads of it must then wait until the commit is in.
    pub fn settle(&mut self) -> bool {
        self.ops.clear();
        self.reads.clear();
        self.proven.clear();
        self.undo = None;
        let mut forgot = false;
        for key in std::mem::take(&mut self.relative) {
            let keep = match self.known.get_mut(&key) {
                Some(Known::Incr(_)) => false,
                Some(Known::List { cleared, .. }) => *cleared,
                Some(Known::Hash { cleared: false, fields }) => {
                    let before = fields.len();
                    fields.retain(|_, f| !matches!(f, Field::Incr(_)));
                    forgot |= fields.len() < before;
                    true
                }
                _ => true,
            };
            if !keep {
                forgot = true;
                self.known.remove(&key);
            }
        }
        forgot
    }

    /// Takes the commands out (the overlay keeps what it knows).
    pub fn take_ops(&mut self) -> Vec<Cmd> {
        std::mem::take(&mut self.ops)
    }
}

fn parse_int(s: &str) -> Result<i64, TypeError> {
    s.trim().parse::<i64>().map_err(|_| format!("the value {s:?} is not an integer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(o: &Overlay) -> Vec<String> {
        o.ops().iter().map(|c| c.join(" ")).collect()
    }

    #[test]
    fn reads_see_the_overlays_strings() {
        let mut o = Overlay::new();
        assert_eq!(o.string("a"), StrView::Stored);
        o.set("a", "n:a", "1".into());
        assert_eq!(o.string("a"), StrView::Local(Some("1".into())));
        o.del("a", "n:a");
        assert_eq!(o.string("a"), StrView::Local(None));
        assert_eq!(o.exists("a"), Some(false));
        assert_eq!(kinds(&o), ["SET n:a 1", "DEL n:a"]);
    }

    #[test]
    fn increments_over_an_unread_base_stay_relative() {
        let mut o = Overlay::new();
        assert_eq!(o.incr("c", "n:c", 2, Some(10)).unwrap(), 12);
        assert_eq!(o.string("c"), StrView::Over(2));
        assert_eq!(o.incr("c", "n:c", 3, Some(10)).unwrap(), 15);
        assert_eq!(o.string("c"), StrView::Over(5));
        assert_eq!(kinds(&o), ["INCRBY n:c 2", "INCRBY n:c 3"]);
        // Set here: absolute from then on.
        o.set("c", "n:c", "7".into());
        assert_eq!(o.incr("c", "n:c", 1, None).unwrap(), 8);
        assert_eq!(o.string("c"), StrView::Local(Some("8".into())));
        // Deleted here: counts from zero.
        o.del("d", "n:d");
        assert_eq!(o.incr("d", "n:d", 4, None).unwrap(), 4);
        assert!(o.incr("e", "n:e", 1, None).is_err(), "an unread base must be given");
    }

    #[test]
    fn hashes_merge_with_what_redis_holds() {
        let mut o = Overlay::new();
        o.hset("h", "n:h", "a", "1".into()).unwrap();
        o.hdel("h", "n:h", "b").unwrap();
        assert_eq!(o.hincr("h", "n:h", "n", 2, Some(40)).unwrap(), 42);
        assert_eq!(o.hash_field("h", "a"), StrView::Local(Some("1".into())));
        assert_eq!(o.hash_field("h", "b"), StrView::Local(None));
        assert_eq!(o.hash_field("h", "n"), StrView::Over(2));
        assert_eq!(o.hash_field("h", "z"), StrView::Stored);
        assert!(o.hash_needs_stored("h"));
        let stored: BTreeMap<String, String> =
            [("a", "0"), ("b", "9"), ("n", "40"), ("z", "5")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let merged = o.hash_merged("h", stored).unwrap();
        assert_eq!(merged.get("a").map(String::as_str), Some("1"));
        assert_eq!(merged.get("b"), None);
        assert_eq!(merged.get("n").map(String::as_str), Some("42"));
        assert_eq!(merged.get("z").map(String::as_str), Some("5"));
    }

    #[test]
    fn a_deleted_hash_hides_redis() {
        let mut o = Overlay::new();
        o.del("h", "n:h");
        o.hset("h", "n:h", "a", "1".into()).unwrap();
        assert!(!o.hash_needs_stored("h"));
        assert_eq!(o.hash_field("h", "other"), StrView::Local(None));
        assert_eq!(o.hincr("h", "n:h", "k", 3, None).unwrap(), 3);
        let merged = o.hash_merged("h", [("x".to_string(), "1".to_string())].into()).unwrap();
        assert_eq!(merged.len(), 2);
    }

    #[test]
    fn lists_and_sets() {
        let mut o = Overlay::new();
        o.rpush("l", "n:l", "1".into()).unwrap();
        o.rpush("l", "n:l", "2".into()).unwrap();
        assert_eq!(o.list("l"), Some((false, &["1".to_string(), "2".to_string()][..])));
        o.sadd("s", "n:s", "a".into()).unwrap();
        o.srem("s", "n:s", "b".into()).unwrap();
        assert_eq!(o.sismember("s", "a"), Some(true));
        assert_eq!(o.sismember("s", "b"), Some(false));
        assert_eq!(o.sismember("s", "c"), None);
        let merged = o.set_merged("s", ["b".to_string(), "c".to_string()].into());
        assert_eq!(merged.into_iter().collect::<Vec<_>>(), ["a", "c"]);
        o.srem("s", "n:s", "a".into()).unwrap();
        assert_eq!(o.sismember("s", "a"), Some(false));
    }

    #[test]
    fn types_cannot_be_mixed_unless_deleted_first() {
        let mut o = Overlay::new();
        o.set("k", "n:k", "1".into());
        assert!(o.hset("k", "n:k", "f", "1".into()).is_err());
        assert!(o.rpush("k", "n:k", "1".into()).is_err());
        assert!(o.sadd("k", "n:k", "1".into()).is_err());
        o.del("k", "n:k");
        o.hset("k", "n:k", "f", "1".into()).unwrap();
        assert!(o.incr("k", "n:k", 1, Some(0)).is_err());
        assert_eq!(o.check_type("k", "hash"), Ok(()));
    }

    #[test]
    fn key_states_for_keys_and_exists() {
        let mut o = Overlay::new();
        o.set("a", "n:a", "1".into());
        o.del("b", "n:b");
        o.hdel("c", "n:c", "f").unwrap();
        o.sadd("d", "n:d", "m".into()).unwrap();
        let states = o.key_states();
        assert_eq!(states.get("a"), Some(&true));
        assert_eq!(states.get("b"), Some(&false));
        assert_eq!(states.get("c"), None, "a field deleted from an unread hash says nothing of the key");
        assert_eq!(states.get("d"), Some(&true));
    }

    #[test]
    fn rollback_undoes_everything_since_the_mark() {
        let mut o = Overlay::new();
        o.set("a", "n:a", "1".into());
        o.hset("h", "n:h", "f", "1".into()).unwrap();
        o.note_read("r1", 4);
        o.note_version("n:__versions", "acc-1", 3);
        let mark = o.mark();
        o.set("a", "n:a", "2".into());
        o.hset("h", "n:h", "f", "2".into()).unwrap();
        o.hset("h", "n:h", "g", "2".into()).unwrap();
        o.del("x", "n:x");
        o.rpush("l", "n:l", "1".into()).unwrap();
        o.note_read("r2", 1);
        o.note_read("r1", 9);
        o.note_version("n:__versions", "acc-1", 5);
        o.rollback(mark);
        assert_eq!(o.string("a"), StrView::Local(Some("1".into())));
        assert_eq!(o.hash_field("h", "f"), StrView::Local(Some("1".into())));
        assert_eq!(o.hash_field("h", "g"), StrView::Stored);
        assert_eq!(o.string("x"), StrView::Stored);
        assert_eq!(o.list("l"), None);
        assert_eq!(o.reads().len(), 1);
        assert_eq!(o.reads().get("r1"), Some(&4));
        assert_eq!(o.known_version("acc-1"), Some(3));
        assert_eq!(o.ops().len(), 3);
        assert_eq!(o.written(), ["a", "h"]);
    }

    #[test]
    fn field_writes_move_field_revisions_whole_writes_the_whole_key() {
        let mut o = Overlay::new();
        o.hset("h", "n:h", "f", "1".into()).unwrap();
        o.set("s", "n:s", "1".into());
        o.del("d", "n:d");
        o.hset("d", "n:d", "g", "1".into()).unwrap();
        assert_eq!(o.revisions_written(), ["d", "d\u{0}", "d\u{0}g", "h", "h\u{0}f", "s", "s\u{0}"]);
    }

    #[test]
    fn settle_keeps_only_absolute_values() {
        let mut o = Overlay::new();
        o.set("a", "n:a", "1".into());
        o.incr("c", "n:c", 1, Some(0)).unwrap();
        o.rpush("l", "n:l", "x".into()).unwrap();
        o.hset("h", "n:h", "f", "1".into()).unwrap();
        o.hincr("h", "n:h", "n", 1, Some(0)).unwrap();
        o.note_read("a", 1);
        assert!(o.settle(), "it forgot the increments and the pushes");
        assert!(o.is_empty());
        assert!(o.reads().is_empty());
        assert_eq!(o.string("a"), StrView::Local(Some("1".into())));
        assert_eq!(o.string("c"), StrView::Stored);
        assert_eq!(o.list("l"), None);
        assert_eq!(o.hash_field("h", "f"), StrView::Local(Some("1".into())));
        assert_eq!(o.hash_field("h", "n"), StrView::Stored);
        o.set("a", "n:a", "2".into());
        o.hset("h", "n:h", "g", "2".into()).unwrap();
        o.sadd("s", "n:s", "m".into()).unwrap();
        assert!(!o.settle(), "absolute values only: nothing forgotten");
        assert_eq!(o.string("a"), StrView::Local(Some("2".into())));
    }

    #[test]
    fn only_keys_written_unread_need_a_type_check() {
        let mut o = Overlay::new();
        o.note_read("h", 1);
        o.note_type("h", "hash");
        o.note_read("s", 1);
        o.note_type("s", "string");
        o.hset("h", "n:h", "f", "1".into()).unwrap();
        o.hset("s", "n:s", "f", "1".into()).unwrap();
        o.set("v", "n:v", "1".into());
        o.rpush("v2", "n:v2", "1".into()).unwrap();
        o.rpush("v2", "n:v2", "2".into()).unwrap();
        o.del("d", "n:d");
        o.sadd("d", "n:d", "m".into()).unwrap();
        o.push_op(vec!["RPUSH".into(), "n:__held:k".into(), "9".into()]);
        assert_eq!(o.type_checks(), [("n:s".to_string(), "hash"), ("n:v2".to_string(), "list")], "a read of s proved a string, not a hash");
        // A proof goes with its read.
        let mut o = Overlay::new();
        let mark = o.mark();
        o.note_read("h", 1);
        o.note_type("h", "hash");
        o.rollback(mark);
        o.hset("h", "n:h", "f", "1".into()).unwrap();
        assert_eq!(o.type_checks(), [("n:h".to_string(), "hash")]);
        o.note_read("h", 1);
        o.note_type("h", "hash");
        assert!(o.type_checks().is_empty());
        o.forget_reads();
        assert_eq!(o.type_checks().len(), 1);
    }

    #[test]
    fn version_notes_move_only_alone() {
        let mut o = Overlay::new();
        o.note_version("n@1:__versions", "k", 2);
        assert!(o.move_version_notes(2));
        assert_eq!(o.ops()[0][1], "n@2:__versions");
        o.set("a", "n@2:a", "1".into());
        assert!(!o.move_version_notes(3));
    }
}
