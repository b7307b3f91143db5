//! What is computed from events once they are read: the causal tree of a unit of work, the
//! money flow across completed transfers, stream statistics, and flattened `data` fields.

use crate::columns::{col, schema, time_type, COLUMNS};
use crate::error::{Error, Result};
use arrow_array::builder::{Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use serde::de::{Deserializer as _, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::borrow::Cow;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

fn arrow_err(e: arrow_schema::ArrowError) -> Error {
    Error::Nats(format!("building the result table: {e}"))
}

/// All batches as one (they share the envelope schema).
pub fn concat(batches: &[RecordBatch]) -> Result<RecordBatch> {
    arrow_select::concat::concat_batches(&schema(), batches).map_err(arrow_err)
}

// ---------------------------------------------------------------------------------------------
// Trace

/// The events of one correlation with two more columns: `parent` (the id of the event that
/// caused it, when that event is in the same unit of work; null for roots) and `depth` (0 for
/// roots). Rows stay in stream order, so causes come before their effects.
pub fn trace_table(batches: &[RecordBatch]) -> Result<RecordBatch> {
    let batch = concat(batches)?;
    let n = batch.num_rows();
    let ids = batch.column(col::ID).as_string::<i32>();
    let causes = batch.column(col::CAUSATION).as_string::<i32>();
    let mut row_of: HashMap<&str, usize> = HashMap::with_capacity(n);
    for i in 0..n {
        row_of.entry(ids.value(i)).or_insert(i);
    }
    let parent: Vec<Option<usize>> = (0..n)
        .map(|i| {
            if causes.is_null(i) {
                return None;
            }
            row_of.get(causes.value(i)).copied().filter(|p| *p != i)
        })
        .collect();
    let mut depth: Vec<Option<i32>> = vec![None; n];
    for start in 0..n {
        // Walk up until a known depth or a root; a cycle (forged data) makes its entry a root.
        let mut chain = Vec::new();
        let mut seen = HashSet::new();
        let mut at = Some(start);
        let mut base = -1;
        while let Some(i) = at {
            if let Some(d) = depth[i] {
                base = d;
                break;
            }
            if !seen.insert(i) {
                break;
            }
            chain.push(i);
            at = parent[i];
        }
        for (k, i) in chain.iter().rev().enumerate() {
            depth[*i] = Some(base + 1 + k as i32);
        }
    }
    let mut parent_col = StringBuilder::new();
    let mut depth_col = Int32Builder::new();
    for i in 0..n {
        parent_col.append_option(parent[i].map(|p| ids.value(p)));
        depth_col.append_value(depth[i].unwrap_or(0));
    }
    let mut fields: Vec<Field> = schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("depth", DataType::Int32, false));
    fields.push(Field::new("parent", DataType::Utf8, true));
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    columns.push(Arc::new(depth_col.finish()));
    columns.push(Arc::new(parent_col.finish()));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(arrow_err)
}

// ---------------------------------------------------------------------------------------------
// Money flow

/// One move of money between two accounts, read from an event of a money-moving type.
#[derive(Debug, Clone)]
pub struct Transfer {
    pub seq: i64,
    pub event_id: String,
    pub event_type: Arc<str>,
    pub correlation: String,
    /// The move's reference (the bank's transfer id); the event key when the event has none.
    pub transfer_id: String,
    pub from: String,
    pub to: String,
    pub amount: i64,
    pub time_us: i64,
}

/// Where a value of a money-moving event is: a path into its `data` object (`"amount_cents"`,
/// `"payer.account"`), or an envelope field written `@key`, `@id` or `@correlation`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldRef {
    Data(Vec<String>),
    Key,
    Id,
    Correlation,
}

impl FieldRef {
    pub fn parse(what: &str, text: &str) -> Result<FieldRef> {
        match text {
            "@key" => return Ok(FieldRef::Key),
            "@id" => return Ok(FieldRef::Id),
            "@correlation" => return Ok(FieldRef::Correlation),
            _ => {}
        }
        if text.starts_with('@') {
            return Err(Error::BadArgument(format!(
                "{what}: {text:?} is not an envelope field; use \"@key\", \"@id\" or \"@correlation\", or a data field path"
            )));
        }
        if text.is_empty() || text.split('.').any(str::is_empty) {
            return Err(Error::BadArgument(format!(
                "{what}: {text:?} is not a field path; use names like \"amount_cents\" or \"payer.account\""
            )));
        }
        Ok(FieldRef::Data(text.split('.').map(str::to_string).collect()))
    }
}

/// How one event type moves money: which fields name the account the money leaves, the
/// account it reaches, the amount (integer minor units) and, optionally, the move's reference.
#[derive(Debug, Clone)]
pub struct MoveSpec {
    pub event_type: String,
    pub source: FieldRef,
    pub target: FieldRef,
    pub amount: FieldRef,
    pub reference: Option<FieldRef>,
}

impl MoveSpec {
    /// The demo bank's: a completed transfer (`TransferCompleted`: `from_account`, `to_account`,
    /// `amount_cents`, `transfer_id`).
    pub fn bank() -> Vec<MoveSpec> {
        let data = |f: &str| FieldRef::Data(vec![f.to_string()]);
        vec![MoveSpec {
            event_type: "TransferCompleted".into(),
            source: data("from_account"),
            target: data("to_account"),
            amount: data("amount_cents"),
            reference: Some(data("transfer_id")),
        }]
    }

    /// Specs from (type, source, target, amount, reference) texts, checked: one spec per type.
    pub fn parse_all(specs: &[(String, String, String, String, Option<String>)]) -> Result<Vec<MoveSpec>> {
        if specs.is_empty() {
            return Err(Error::BadArgument("moves: give at least one money-moving event type".into()));
        }
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(specs.len());
        for (ty, source, target, amount, reference) in specs {
            sequent_protocol::validate::validate_type(ty).map_err(|e| Error::BadArgument(format!("moves: type {ty:?}: {e}")))?;
            if !seen.insert(ty.as_str()) {
                return Err(Error::BadArgument(format!("moves: type {ty:?} is given twice; give each type once")));
            }
            out.push(MoveSpec {
                event_type: ty.clone(),
                source: FieldRef::parse(&format!("moves[{ty}].source"), source)?,
                target: FieldRef::parse(&format!("moves[{ty}].target"), target)?,
                amount: FieldRef::parse(&format!("moves[{ty}].amount"), amount)?,
                reference: reference.as_deref().map(|r| FieldRef::parse(&format!("moves[{ty}].ref"), r)).transpose()?,
            });
        }
        Ok(out)
    }
}

impl std::fmt::Display for FieldRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FieldRef::Data(path) => write!(f, "{}", path.join(".")),
            FieldRef::Key => f.write_str("@key"),
            FieldRef::Id => f.write_str("@id"),
            FieldRef::Correlation => f.write_str("@correlation"),
        }
    }
}

/// The envelope of one row, for `@key`-style references.
struct Envelope<'a> {
    key: &'a str,
    id: &'a str,
    correlation: &'a str,
}

/// A JSON string, borrowed from the text unless it has escapes.
#[derive(Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

/// Reads the members of a JSON object named in `wanted` into `out` (same order) as raw JSON
/// slices of the text, skipping the others without building them: the money scan reads a few
/// fields of every event and allocates nothing for the rest.
struct Pick<'w, 'a> {
    wanted: &'w [&'w str],
    out: &'w mut [Option<&'a RawValue>],
}

impl<'de> Visitor<'de> for Pick<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        while let Some(key) = map.next_key::<Text<'de>>()? {
            match self.wanted.iter().position(|w| *w == key.0) {
                Some(i) => self.out[i] = Some(map.next_value::<&'de RawValue>()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

fn pick<'a>(json: &'a str, wanted: &[&str], out: &mut [Option<&'a RawValue>]) -> std::result::Result<(), String> {
    out.iter_mut().for_each(|o| *o = None);
    let mut de = serde_json::Deserializer::from_str(json);
    de.deserialize_map(Pick { wanted, out }).and_then(|()| de.end()).map_err(|e| e.to_string())
}

/// What a field reference found in one event.
enum Found<'a> {
    Json(&'a RawValue),
    Text(&'a str),
}

impl std::fmt::Display for Found<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Found::Json(raw) => f.write_str(raw.get()),
            Found::Text(s) => write!(f, "{s:?}"),
        }
    }
}

/// How one spec reads its events: the top-level data members its fields start with.
struct Reader<'s> {
    spec: &'s MoveSpec,
    tops: Vec<&'s str>,
}

impl<'s> Reader<'s> {
    fn new(spec: &'s MoveSpec) -> Self {
        let mut tops: Vec<&str> = Vec::new();
        for f in [&spec.source, &spec.target, &spec.amount].into_iter().chain(spec.reference.as_ref()) {
            if let FieldRef::Data(path) = f {
                if !tops.contains(&path[0].as_str()) {
                    tops.push(&path[0]);
                }
            }
        }
        Reader { spec, tops }
    }

    /// The value of `field` in an event whose top-level members are `top` (null = missing).
    fn find<'a>(&self, field: &FieldRef, top: &[Option<&'a RawValue>], env: &Envelope<'a>) -> Option<Found<'a>> {
        let path = match field {
            FieldRef::Key => return Some(Found::Text(env.key)),
            FieldRef::Id => return Some(Found::Text(env.id)),
            FieldRef::Correlation => return Some(Found::Text(env.correlation)),
            FieldRef::Data(path) => path,
        };
        let i = self.tops.iter().position(|t| *t == path[0])?;
        let mut at = top[i]?;
        for part in &path[1..] {
            let mut one = [None];
            pick(at.get(), &[part.as_str()], &mut one).ok()?;
            at = one[0]?;
        }
        (at.get() != "null").then_some(Found::Json(at))
    }
}

/// An account or a reference: a non-empty string, or an integer (as its decimal text).
fn as_name<'a>(found: &Found<'a>) -> Option<Cow<'a, str>> {
    match found {
        Found::Text(s) => Some(Cow::Borrowed(*s)),
        Found::Json(raw) => {
            let text = raw.get();
            if text.starts_with('"') {
                // A string without escapes is its text between the quotes (the common case).
                let s = match text.len() >= 2 && !text.contains('\\') {
                    true => Cow::Borrowed(&text[1..text.len() - 1]),
                    false => serde_json::from_str::<Text<'a>>(text).ok()?.0,
                };
                (!s.is_empty()).then_some(s)
            } else if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
                let n = serde_json::from_str::<serde_json::Number>(text).ok()?;
                (n.is_i64() || n.is_u64()).then(|| Cow::Owned(n.to_string()))
            } else {
                None
            }
        }
    }
}

fn as_amount(found: &Found<'_>) -> Option<i64> {
    match found {
        // A JSON integer is digits with an optional minus: what str::parse reads (a fraction,
        // an exponent or a string is refused).
        Found::Json(raw) => raw.get().parse::<i64>().ok(),
        Found::Text(_) => None,
    }
}

/// The moves of money in some batches of events of the specs' types, in stream order, and a
/// warning about events that could not be read as one (an account missing, an amount that is
/// not whole minor units, no time). With a reference field, events naming the same reference,
/// source, target and amount are one move (the two legs of a double-entry pair, a replayed
/// event): the first in stream order counts.
pub fn transfers(batches: &[RecordBatch], specs: &[MoveSpec]) -> (Vec<Transfer>, Option<String>) {
    // A few types at most: a list is quicker to search than a hash map.
    let readers: Vec<(&str, Reader<'_>, Arc<str>)> =
        specs.iter().map(|s| (s.event_type.as_str(), Reader::new(s), Arc::from(s.event_type.as_str()))).collect();
    let mut out: Vec<Transfer> = Vec::new();
    // Moves with a reference, by a hash of (reference, source, target, amount): the index in
    // `out` of the first with that hash, and of any others (a hash collision), compared in full.
    let mut seen: HashMap<u64, usize> = HashMap::new();
    let mut collided: HashMap<u64, Vec<usize>> = HashMap::new();
    let mut bad = 0u64;
    let mut first_bad = None;
    for b in batches {
        let seq = b.column(col::SEQ).as_primitive::<Int64Type>();
        let ids = b.column(col::ID).as_string::<i32>();
        let types = b.column(col::TYPE).as_string::<i32>();
        let keys = b.column(col::KEY).as_string::<i32>();
        let corr = b.column(col::CORRELATION).as_string::<i32>();
        let time = b.column(col::TIME).as_primitive::<TimestampMicrosecondType>();
        let data = b.column(col::DATA).as_string::<i32>();
        for i in 0..b.num_rows() {
            let ty = types.value(i);
            let Some((_, reader, type_name)) = readers.iter().find(|(t, ..)| *t == ty) else { continue };
            let spec = reader.spec;
            let env = Envelope { key: keys.value(i), id: ids.value(i), correlation: corr.value(i) };
            // The move, and whether it has a reference of its own (then it is deduplicated).
            let read = || -> std::result::Result<(Transfer, bool), String> {
                if !time.is_valid(i) {
                    return Err("no readable time".into());
                }
                // At most four fields, so at most four top-level members to read.
                let mut members = [None; 4];
                let top = &mut members[..reader.tops.len()];
                pick(data.value(i), &reader.tops, top).map_err(|e| format!("data is not a JSON object: {e}"))?;
                let name = |field: &FieldRef, what: &str| -> std::result::Result<String, String> {
                    let v = reader.find(field, top, &env).ok_or_else(|| format!("{what} field {field} is missing"))?;
                    as_name(&v).map(Cow::into_owned).ok_or_else(|| format!("{what} field {field} is {v}, not a name"))
                };
                let from = name(&spec.source, "source")?;
                let to = name(&spec.target, "target")?;
                let amount = reader.find(&spec.amount, top, &env).ok_or_else(|| format!("amount field {} is missing", spec.amount))?;
                let amount = as_amount(&amount).ok_or_else(|| format!("amount field {} is {amount}, not whole minor units", spec.amount))?;
                let reference = spec.reference.as_ref().and_then(|r| reader.find(r, top, &env)).and_then(|v| as_name(&v).map(Cow::into_owned));
                let has_ref = reference.is_some();
                let t = Transfer {
                    seq: seq.value(i),
                    event_id: env.id.to_string(),
                    event_type: type_name.clone(),
                    correlation: env.correlation.to_string(),
                    transfer_id: reference.unwrap_or_else(|| env.key.to_string()),
                    from,
                    to,
                    amount,
                    time_us: time.value(i),
                };
                Ok((t, has_ref))
            };
            match read() {
                Ok((t, has_ref)) => {
                    if has_ref {
                        let mut h = DefaultHasher::new();
                        (&t.transfer_id, &t.from, &t.to, t.amount).hash(&mut h);
                        let h = h.finish();
                        let same = |j: &usize| {
                            let o: &Transfer = &out[*j];
                            (&o.transfer_id, &o.from, &o.to, o.amount) == (&t.transfer_id, &t.from, &t.to, t.amount)
                        };
                        match seen.get(&h) {
                            None => {
                                seen.insert(h, out.len());
                            }
                            Some(first) => {
                                if same(first) {
                                    continue;
                                }
                                let others = collided.entry(h).or_default();
                                if others.iter().any(same) {
                                    continue;
                                }
                                others.push(out.len());
                            }
                        }
                    }
                    out.push(t);
                }
                Err(why) => {
                    bad += 1;
                    if first_bad.is_none() {
                        first_bad = Some(format!("seq {}, {}: {why}", seq.value(i), spec.event_type));
                    }
                }
            }
        }
    }
    let warning = (bad > 0).then(|| {
        let fields: Vec<String> = specs
            .iter()
            .map(|s| format!("{} ({} -> {}, {})", s.event_type, s.source, s.target, s.amount))
            .collect();
        format!(
            "{bad} money event(s) could not be read as a move of money and were left out of the money flow \
             (first at {}); expected: {}",
            first_bad.unwrap_or_default(),
            fields.join("; ")
        )
    });
    (out, warning)
}

#[derive(Debug, Default, Clone)]
pub struct AccountFlow {
    pub hop: u32,
    pub received: i64,
    pub sent: i64,
    pub transfers_in: u64,
    pub transfers_out: u64,
}

#[derive(Debug, Default)]
pub struct MoneyFlow {
    /// (hop, index into the transfers), ordered by hop, time, seq.
    pub edges: Vec<(u32, usize)>,
    pub accounts: BTreeMap<String, AccountFlow>,
}

/// Follows money hop by hop.
///
/// Forward: hop 1 is every transfer out of `origin`. An account first reached at hop h, whose
/// earliest incoming hop-h transfer completed at time t, contributes at hop h+1 every transfer
/// out of it completed at or after t (money can only leave after it arrived). Reverse is the
/// mirror: hop 1 is every transfer into `origin`; a sender first reached at hop h, whose latest
/// outgoing hop-h transfer completed at t, contributes every transfer into it completed at or
/// before t. Each transfer is counted once (at the first hop it qualifies for) and each account
/// is expanded once (at the hop where it was first reached), so cycles end.
pub fn follow_money(transfers: &[Transfer], origin: &str, hops: u32, reverse: bool) -> MoneyFlow {
    // Transfers by the account they leave (forward) or reach (reverse), in time order.
    let mut by_account: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, t) in transfers.iter().enumerate() {
        let side = if reverse { t.to.as_str() } else { t.from.as_str() };
        by_account.entry(side).or_default().push(i);
    }
    for list in by_account.values_mut() {
        list.sort_by_key(|i| (transfers[*i].time_us, transfers[*i].seq));
    }
    let mut flow = MoneyFlow::default();
    flow.accounts.insert(origin.to_string(), AccountFlow { hop: 0, ..Default::default() });
    let mut used = vec![false; transfers.len()];
    // (account, time bound): forward = not before; reverse = not after.
    let mut frontier: Vec<(String, i64)> = vec![(origin.to_string(), if reverse { i64::MAX } else { i64::MIN })];
    for hop in 1..=hops {
        let mut next: BTreeMap<String, i64> = BTreeMap::new();
        let mut hop_edges = Vec::new();
        for (account, bound) in &frontier {
            let Some(list) = by_account.get(account.as_str()) else { continue };
            for &i in list {
                let t = &transfers[i];
                let in_time = if reverse { t.time_us <= *bound } else { t.time_us >= *bound };
                if used[i] || !in_time {
                    continue;
                }
                used[i] = true;
                hop_edges.push(i);
                let other = if reverse { &t.from } else { &t.to };
                let newly = !flow.accounts.contains_key(other);
                {
                    let src = flow.accounts.entry(t.from.clone()).or_insert_with(|| AccountFlow { hop, ..Default::default() });
                    src.sent += t.amount;
                    src.transfers_out += 1;
                }
                {
                    let dst = flow.accounts.entry(t.to.clone()).or_insert_with(|| AccountFlow { hop, ..Default::default() });
                    dst.received += t.amount;
                    dst.transfers_in += 1;
                }
                if newly || next.contains_key(other) {
                    let e = next.entry(other.clone()).or_insert(t.time_us);
                    *e = if reverse { (*e).max(t.time_us) } else { (*e).min(t.time_us) };
                }
            }
        }
        hop_edges.sort_by_key(|i| (transfers[*i].time_us, transfers[*i].seq));
        flow.edges.extend(hop_edges.into_iter().map(|i| (hop, i)));
        if next.is_empty() {
            break;
        }
        frontier = next.into_iter().collect();
    }
    flow
}

pub fn money_tables(transfers: &[Transfer], flow: &MoneyFlow) -> Result<(RecordBatch, RecordBatch)> {
    let mut hop = Int32Builder::new();
    let (mut from, mut to, mut tid, mut eid, mut corr, mut ety) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let (mut amount, mut seq) = (Int64Builder::new(), Int64Builder::new());
    let mut time = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    for (h, i) in &flow.edges {
        let t = &transfers[*i];
        hop.append_value(*h as i32);
        from.append_value(&t.from);
        to.append_value(&t.to);
        amount.append_value(t.amount);
        tid.append_value(&t.transfer_id);
        time.append_value(t.time_us);
        seq.append_value(t.seq);
        eid.append_value(&t.event_id);
        corr.append_value(&t.correlation);
        ety.append_value(&t.event_type);
    }
    let edge_schema = Schema::new(vec![
        Field::new("hop", DataType::Int32, false),
        Field::new("from_account", DataType::Utf8, false),
        Field::new("to_account", DataType::Utf8, false),
        Field::new("amount_cents", DataType::Int64, false),
        Field::new("transfer_id", DataType::Utf8, false),
        Field::new("time", time_type(), false),
        Field::new("seq", DataType::Int64, false),
        Field::new("event_id", DataType::Utf8, false),
        Field::new("correlation", DataType::Utf8, false),
        Field::new("type", DataType::Utf8, false),
    ]);
    let edges = RecordBatch::try_new(
        Arc::new(edge_schema),
        vec![
            Arc::new(hop.finish()),
            Arc::new(from.finish()),
            Arc::new(to.finish()),
            Arc::new(amount.finish()),
            Arc::new(tid.finish()),
            Arc::new(time.finish()),
            Arc::new(seq.finish()),
            Arc::new(eid.finish()),
            Arc::new(corr.finish()),
            Arc::new(ety.finish()),
        ],
    )
    .map_err(arrow_err)?;

    let mut accounts: Vec<(&String, &AccountFlow)> = flow.accounts.iter().collect();
    accounts.sort_by(|a, b| (a.1.hop, a.0).cmp(&(b.1.hop, b.0)));
    let mut name = StringBuilder::new();
    let mut ahop = Int32Builder::new();
    let (mut received, mut sent, mut tin, mut tout) = (Int64Builder::new(), Int64Builder::new(), Int64Builder::new(), Int64Builder::new());
    for (account, f) in accounts {
        name.append_value(account);
        ahop.append_value(f.hop as i32);
        received.append_value(f.received);
        sent.append_value(f.sent);
        tin.append_value(f.transfers_in as i64);
        tout.append_value(f.transfers_out as i64);
    }
    let account_schema = Schema::new(vec![
        Field::new("account", DataType::Utf8, false),
        Field::new("hop", DataType::Int32, false),
        Field::new("received_cents", DataType::Int64, false),
        Field::new("sent_cents", DataType::Int64, false),
        Field::new("transfers_in", DataType::Int64, false),
        Field::new("transfers_out", DataType::Int64, false),
    ]);
    let accounts = RecordBatch::try_new(
        Arc::new(account_schema),
        vec![
            Arc::new(name.finish()),
            Arc::new(ahop.finish()),
            Arc::new(received.finish()),
            Arc::new(sent.finish()),
            Arc::new(tin.finish()),
            Arc::new(tout.finish()),
        ],
    )
    .map_err(arrow_err)?;
    Ok((edges, accounts))
}

// ---------------------------------------------------------------------------------------------
// Statistics

#[derive(Debug, Default)]
pub struct TypeStats {
    pub events: u64,
    pub first_us: Option<i64>,
    pub last_us: Option<i64>,
}

#[derive(Debug, Default)]
pub struct Stats {
    pub events: u64,
    pub first_seq: Option<i64>,
    pub last_seq: Option<i64>,
    pub first_us: Option<i64>,
    pub last_us: Option<i64>,
    pub by_type: BTreeMap<String, TypeStats>,
    pub by_producer: BTreeMap<String, u64>,
    keys: HashSet<u64>,
    correlations: HashSet<u64>,
}

fn hash(s: &str) -> u64 {
    let mut h = DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

fn min_opt(a: Option<i64>, b: i64) -> Option<i64> {
    Some(a.map_or(b, |a| a.min(b)))
}

fn max_opt(a: Option<i64>, b: i64) -> Option<i64> {
    Some(a.map_or(b, |a| a.max(b)))
}

impl Stats {
    pub fn add(&mut self, b: &RecordBatch) {
        let seq = b.column(col::SEQ).as_primitive::<Int64Type>();
        let types = b.column(col::TYPE).as_string::<i32>();
        let keys = b.column(col::KEY).as_string::<i32>();
        let corr = b.column(col::CORRELATION).as_string::<i32>();
        let producers = b.column(col::PRODUCER).as_string::<i32>();
        let time = b.column(col::TIME).as_primitive::<TimestampMicrosecondType>();
        let mut type_counts: HashMap<&str, (u64, Option<i64>, Option<i64>)> = HashMap::new();
        let mut producer_counts: HashMap<&str, u64> = HashMap::new();
        for i in 0..b.num_rows() {
            self.events += 1;
            let s = seq.value(i);
            self.first_seq = Some(self.first_seq.map_or(s, |f| f.min(s)));
            self.last_seq = Some(self.last_seq.map_or(s, |l| l.max(s)));
            let t = time.is_valid(i).then(|| time.value(i));
            let ty = types.value(i);
            let entry = type_counts.entry(ty).or_default();
            entry.0 += 1;
            if let Some(t) = t {
                self.first_us = min_opt(self.first_us, t);
                self.last_us = max_opt(self.last_us, t);
                entry.1 = min_opt(entry.1, t);
                entry.2 = max_opt(entry.2, t);
            }
            *producer_counts.entry(producers.value(i)).or_default() += 1;
            self.keys.insert(hash(keys.value(i)));
            self.correlations.insert(hash(corr.value(i)));
        }
        for (ty, (n, first, last)) in type_counts {
            let e = self.by_type.entry(ty.to_string()).or_default();
            e.events += n;
            if let Some(f) = first {
                e.first_us = min_opt(e.first_us, f);
            }
            if let Some(l) = last {
                e.last_us = max_opt(e.last_us, l);
            }
        }
        for (p, n) in producer_counts {
            *self.by_producer.entry(p.to_string()).or_default() += n;
        }
    }

    pub fn distinct_keys(&self) -> u64 {
        self.keys.len() as u64
    }

    pub fn distinct_correlations(&self) -> u64 {
        self.correlations.len() as u64
    }

    pub fn type_table(&self) -> Result<RecordBatch> {
        let mut name = StringBuilder::new();
        let mut events = Int64Builder::new();
        let mut first = TimestampMicrosecondBuilder::new().with_timezone("UTC");
        let mut last = TimestampMicrosecondBuilder::new().with_timezone("UTC");
        let mut rows: Vec<(&String, &TypeStats)> = self.by_type.iter().collect();
        rows.sort_by(|a, b| b.1.events.cmp(&a.1.events).then(a.0.cmp(b.0)));
        for (t, s) in rows {
            name.append_value(t);
            events.append_value(s.events as i64);
            first.append_option(s.first_us);
            last.append_option(s.last_us);
        }
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("type", DataType::Utf8, false),
                Field::new("events", DataType::Int64, false),
                Field::new("first_time", time_type(), true),
                Field::new("last_time", time_type(), true),
            ])),
            vec![Arc::new(name.finish()), Arc::new(events.finish()), Arc::new(first.finish()), Arc::new(last.finish())],
        )
        .map_err(arrow_err)
    }

    pub fn producer_table(&self) -> Result<RecordBatch> {
        let mut name = StringBuilder::new();
        let mut events = Int64Builder::new();
        let mut rows: Vec<(&String, &u64)> = self.by_producer.iter().collect();
        rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (p, n) in rows {
            name.append_value(p);
            events.append_value(*n as i64);
        }
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("producer", DataType::Utf8, false), Field::new("events", DataType::Int64, false)])),
            vec![Arc::new(name.finish()), Arc::new(events.finish())],
        )
        .map_err(arrow_err)
    }
}

// ---------------------------------------------------------------------------------------------
// Flattened data fields

/// The column name a data field gets: its path, or `data.<path>` when that would clash with an
/// envelope column or an earlier field.
pub fn field_column_names(fields: &[String]) -> Result<Vec<String>> {
    let mut names = Vec::new();
    let mut taken: HashSet<String> = COLUMNS.iter().map(|s| s.to_string()).collect();
    let mut given = HashSet::new();
    for f in fields {
        if !given.insert(f.as_str()) {
            return Err(Error::BadArgument(format!("fields: {f:?} is given twice")));
        }
        if f.is_empty() || f.split('.').any(str::is_empty) {
            return Err(Error::BadArgument(format!(
                "fields: {f:?} is not a field path; use names like \"amount_cents\" or \"address.city\""
            )));
        }
        let name = if taken.contains(f) { format!("data.{f}") } else { f.clone() };
        if !taken.insert(name.clone()) {
            return Err(Error::BadArgument(format!("fields: {f:?} is given twice")));
        }
        names.push(name);
    }
    Ok(names)
}

fn lookup<'v>(v: &'v Value, path: &str) -> Option<&'v Value> {
    let mut at = v;
    for part in path.split('.') {
        at = at.as_object()?.get(part)?;
    }
    (!at.is_null()).then_some(at)
}

/// Adds one column per data field to every batch. Each column's type is inferred from all its
/// values: int64 if every value is an integer, float64 if every value is a number, bool, string,
/// and otherwise text (strings as they are, anything else as JSON). Missing values are null.
pub fn add_fields(batches: Vec<RecordBatch>, fields: &[String]) -> Result<Vec<RecordBatch>> {
    if fields.is_empty() {
        return Ok(batches);
    }
    let names = field_column_names(fields)?;
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let mut values: Vec<Vec<Option<Value>>> = vec![Vec::with_capacity(total); fields.len()];
    for b in &batches {
        let data = b.column(col::DATA).as_string::<i32>();
        for i in 0..b.num_rows() {
            let parsed: Value = serde_json::from_str(data.value(i)).unwrap_or(Value::Null);
            for (k, f) in fields.iter().enumerate() {
                values[k].push(lookup(&parsed, f).cloned());
            }
        }
    }
    let columns: Vec<ArrayRef> = values.iter().map(|v| build_column(v)).collect();
    let first_schema = batches.first().map(|b| b.schema()).unwrap_or_else(schema);
    let mut out_fields: Vec<Field> = first_schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    for (name, c) in names.iter().zip(&columns) {
        out_fields.push(Field::new(name, c.data_type().clone(), true));
    }
    let out_schema = Arc::new(Schema::new(out_fields));
    let mut offset = 0;
    let mut out = Vec::with_capacity(batches.len().max(1));
    for b in &batches {
        let mut cols = b.columns().to_vec();
        cols.extend(columns.iter().map(|c| c.slice(offset, b.num_rows())));
        offset += b.num_rows();
        out.push(RecordBatch::try_new(out_schema.clone(), cols).map_err(arrow_err)?);
    }
    if out.is_empty() {
        out.push(RecordBatch::new_empty(out_schema));
    }
    Ok(out)
}

fn build_column(values: &[Option<Value>]) -> ArrayRef {
    let present = || values.iter().flatten();
    if present().next().is_some() && present().all(|v| v.as_i64().is_some()) {
        return Arc::new(values.iter().map(|v| v.as_ref().and_then(Value::as_i64)).collect::<Int64Array>());
    }
    if present().next().is_some() && present().all(Value::is_number) {
        return Arc::new(values.iter().map(|v| v.as_ref().and_then(Value::as_f64)).collect::<Float64Array>());
    }
    if present().next().is_some() && present().all(Value::is_boolean) {
        return Arc::new(values.iter().map(|v| v.as_ref().and_then(Value::as_bool)).collect::<BooleanArray>());
    }
    Arc::new(
        values
            .iter()
            .map(|v| {
                v.as_ref().map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
            })
            .collect::<StringArray>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(seq: i64, from: &str, to: &str, amount: i64, time: i64) -> Transfer {
        Transfer {
            seq,
            event_id: format!("e{seq}"),
            event_type: "TransferCompleted".into(),
            correlation: format!("c{seq}"),
            transfer_id: format!("tr-{seq}"),
            from: from.into(),
            to: to.into(),
            amount,
            time_us: time,
        }
    }

    #[test]
    fn follows_money_only_after_it_arrived() {
        let ts = vec![
            t(1, "B", "X", 999, 5),   // B pays X before A's money arrives: not part of the flow
            t(2, "A", "B", 10_000, 10),
            t(3, "B", "C", 7_000, 20),
            t(4, "C", "D", 5_000, 30),
            t(5, "Z", "A", 1, 40),    // into A: only in the reverse view
            t(6, "D", "A", 100, 50),  // a cycle back to the origin
        ];
        let f = follow_money(&ts, "A", 3, false);
        let edges: Vec<(u32, i64)> = f.edges.iter().map(|(h, i)| (*h, ts[*i].seq)).collect();
        assert_eq!(edges, vec![(1, 2), (2, 3), (3, 4)]);
        assert_eq!(f.accounts["D"].received, 5_000);
        assert_eq!(f.accounts["B"].received, 10_000);
        assert_eq!(f.accounts["B"].sent, 7_000);
        assert!(!f.accounts.contains_key("X"));
        let four = follow_money(&ts, "A", 4, false);
        assert_eq!(four.edges.last().map(|(h, i)| (*h, ts[*i].seq)), Some((4, 6)));

        let r = follow_money(&ts, "D", 3, true);
        let edges: Vec<(u32, i64)> = r.edges.iter().map(|(h, i)| (*h, ts[*i].seq)).collect();
        // D <- C (30) <- B (20) <- A (10); Z -> A at 40 came after A's money left: excluded.
        assert_eq!(edges, vec![(1, 4), (2, 3), (3, 2)]);
        assert_eq!(r.accounts["A"].sent, 10_000);
    }

    /// A batch of stored events: (seq, type, key, data JSON), one second apart.
    fn batch(rows: &[(u64, &str, &str, &str)]) -> RecordBatch {
        use crate::columns::{EventBuilder, StoredRef};
        use sequent_protocol::{Event, Producer};
        let mut b = EventBuilder::new();
        for (seq, ty, key, data) in rows {
            let stored = Event {
                seq: 0,
                id: format!("e{seq}"),
                event_type: (*ty).into(),
                key: (*key).into(),
                version: 0,
                correlation: format!("c{seq}"),
                causation: None,
                producer: Producer { service: "test".into(), instance: None },
                time: "2026-11-27T00:00:00Z".into(),
                data: serde_json::value::RawValue::from_string((*data).to_string()).unwrap(),
            }
            .to_stored();
            let parsed = StoredRef::parse(&stored).unwrap();
            b.append(*seq, &parsed, Some(*seq as i64 * 1_000_000));
        }
        b.finish()
    }

    fn spec(ty: &str, source: &str, target: &str, amount: &str, reference: Option<&str>) -> (String, String, String, String, Option<String>) {
        (ty.into(), source.into(), target.into(), amount.into(), reference.map(Into::into))
    }

    #[test]
    fn the_bank_default_reads_completed_transfers_only() {
        let b = batch(&[
            (1, "TransferRequested", "tr-1", r#"{"transfer_id":"t1","from_account":"A","to_account":"B","amount_cents":5}"#),
            (2, "TransferCompleted", "tr-1", r#"{"transfer_id":"t1","from_account":"A","to_account":"B","amount_cents":5}"#),
            (3, "TransferCompleted", "tr-2", r#"{"from_account":"B","to_account":"C","amount_cents":3}"#),
            (4, "TransferCompleted", "tr-3", r#"{"from_account":"B","to_account":"C","amount_cents":2.5}"#),
        ]);
        let (ts, warning) = transfers(&[b], &MoveSpec::bank());
        let got: Vec<(&str, &str, &str, i64, &str)> =
            ts.iter().map(|t| (t.from.as_str(), t.to.as_str(), t.transfer_id.as_str(), t.amount, &*t.event_type)).collect();
        // Without a transfer_id the key stands in; 2.5 is not whole cents: left out, with a warning.
        assert_eq!(got, vec![("A", "B", "t1", 5, "TransferCompleted"), ("B", "C", "tr-2", 3, "TransferCompleted")]);
        let w = warning.unwrap();
        assert!(w.contains("1 money event(s)") && w.contains("seq 4") && w.contains("not whole minor units"), "{w}");
    }

    #[test]
    fn custom_moves_read_other_shapes() {
        let b = batch(&[
            // One-event moves with nested fields and integer account numbers.
            (1, "PaymentSent", "pay-1", r#"{"payer":{"iban":"DE01"},"payee":{"iban":"DE02"},"value":{"minor":700},"ref":"p1"}"#),
            (2, "PaymentSent", "pay-2", r#"{"payer":{"iban":1234},"payee":{"iban":"DE03"},"value":{"minor":100}}"#),
            // Double-entry legs: the account is the event key; both legs of m1 are one move.
            (3, "LedgerDebit", "DE02", r#"{"other":"DE04","cents":300,"move":"m1"}"#),
            (4, "LedgerCredit", "DE04", r#"{"other":"DE02","cents":300,"move":"m1"}"#),
            (5, "LedgerCredit", "DE05", r#"{"other":"DE02","cents":50}"#),
            (6, "LedgerCredit", "DE05", r#"{"other":"DE02","cents":50}"#),
            (7, "LedgerDebit", "DE02", r#"{"cents":1}"#),
            (8, "Unrelated", "x", r#"{"payer":"A","payee":"B","cents":9}"#),
        ]);
        let specs = MoveSpec::parse_all(&[
            spec("PaymentSent", "payer.iban", "payee.iban", "value.minor", Some("ref")),
            spec("LedgerDebit", "@key", "other", "cents", Some("move")),
            spec("LedgerCredit", "other", "@key", "cents", Some("move")),
        ])
        .unwrap();
        let (ts, warning) = transfers(&[b], &specs);
        let got: Vec<(i64, &str, &str, i64, &str)> =
            ts.iter().map(|t| (t.seq, t.from.as_str(), t.to.as_str(), t.amount, t.transfer_id.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (1, "DE01", "DE02", 700, "p1"),
                (2, "1234", "DE03", 100, "pay-2"),
                (3, "DE02", "DE04", 300, "m1"),
                // Two credits without a reference are two moves, even when they look alike.
                (5, "DE02", "DE05", 50, "DE05"),
                (6, "DE02", "DE05", 50, "DE05"),
            ]
        );
        let w = warning.unwrap();
        assert!(w.contains("seq 7, LedgerDebit: target field other is missing"), "{w}");
        let flow = follow_money(&ts, "DE01", 3, false);
        let hops: Vec<(u32, i64)> = flow.edges.iter().map(|(h, i)| (*h, ts[*i].seq)).collect();
        assert_eq!(hops, vec![(1, 1), (2, 3), (2, 5), (2, 6)]);
    }

    #[test]
    fn fields_with_escapes_nulls_and_odd_values() {
        let b = batch(&[
            // An escaped member name and an escaped account name are read as their text.
            (1, "Paid", "k1", r#"{"pa\u0079er":"A\"1","to":"B","n":{"c":5},"skip":[{"x":1}]}"#),
            (2, "Paid", "k2", r#"{"payer":"A","to":null,"n":{"c":5}}"#),
            (3, "Paid", "k3", r#"{"payer":"A","to":"B","n":{"c":"5"}}"#),
            (4, "Paid", "k4", r#"{"payer":"","to":"B","n":{"c":5}}"#),
            (5, "Paid", "k5", r#"{"payer":{"a":1},"to":"B","n":{"c":5}}"#),
            (6, "Paid", "k6", r#"{"payer":"A","to":"B","n":5}"#),
            (7, "Paid", "k7", r#"{"payer":"A","to":"B","n":{"c":-3}}"#),
            (8, "Paid", "k8", r#"[1,2]"#),
        ]);
        let specs = MoveSpec::parse_all(&[spec("Paid", "payer", "to", "n.c", None)]).unwrap();
        let (ts, warning) = transfers(&[b], &specs);
        let got: Vec<(i64, &str, &str, i64)> = ts.iter().map(|t| (t.seq, t.from.as_str(), t.to.as_str(), t.amount)).collect();
        assert_eq!(got, vec![(1, "A\"1", "B", 5), (7, "A", "B", -3)]);
        let w = warning.unwrap();
        // Six left out: null target, string amount, empty and object payers, no n.c, not an object.
        assert!(w.starts_with("6 money event(s)") && w.contains("seq 2, Paid: target field to is missing"), "{w}");
    }

    #[test]
    fn move_specs_are_checked() {
        let err = |specs: &[(String, String, String, String, Option<String>)]| MoveSpec::parse_all(specs).unwrap_err().to_string();
        assert!(err(&[]).contains("at least one"));
        assert!(err(&[spec("A", "x", "y", "z", None), spec("A", "x", "y", "z", None)]).contains("given twice"));
        assert!(err(&[spec("A", "@owner", "y", "z", None)]).contains("not an envelope field"));
        assert!(err(&[spec("A", "x", "y..z", "z", None)]).contains("not a field path"));
        assert!(err(&[spec("ev.>", "x", "y", "z", None)]).contains("type"));
    }

    /// `cargo test --release -p pyreport --lib -- --ignored --nocapture money_read_speed`
    #[test]
    #[ignore]
    fn money_read_speed() {
        let rows: Vec<(u64, String)> = (0..200_000u64)
            .map(|i| {
                let data = format!(
                    r#"{{"transfer_id":"t{i}","from_account":"acc-{}","to_account":"acc-{}","amount_cents":{}}}"#,
                    i % 1000,
                    (i * 7 + 1) % 1000,
                    100 + i % 5000
                );
                (i + 1, data)
            })
            .collect();
        let refs: Vec<(u64, &str, &str, &str)> = rows.iter().map(|(s, d)| (*s, "TransferCompleted", "tr-x", d.as_str())).collect();
        let b = batch(&refs);
        for _ in 0..3 {
            let t0 = std::time::Instant::now();
            let (ts, _) = transfers(std::slice::from_ref(&b), &MoveSpec::bank());
            let t1 = t0.elapsed();
            let specs = MoveSpec::parse_all(&[spec("TransferCompleted", "from_account", "to_account", "amount_cents", None)]).unwrap();
            let t2 = std::time::Instant::now();
            let _ = transfers(std::slice::from_ref(&b), &specs);
            let t3 = t2.elapsed();
            let t4 = std::time::Instant::now();
            let flow = follow_money(&ts, "acc-1", 64, false);
            let _ = money_tables(&ts, &flow).unwrap();
            eprintln!("200,000 TransferCompleted: read with ref {t1:?}, without {t3:?}; flow + tables {:?}", t4.elapsed());
        }
    }

    #[test]
    fn field_names_avoid_envelope_columns() {
        let names = field_column_names(&["amount_cents".into(), "key".into()]).unwrap();
        assert_eq!(names, vec!["amount_cents", "data.key"]);
        assert!(field_column_names(&["a..b".into()]).is_err());
        assert!(field_column_names(&["x".into(), "x".into()]).is_err());
    }

    #[test]
    fn field_types_are_inferred() {
        let ints = build_column(&[Some(Value::from(1)), None, Some(Value::from(3))]);
        assert_eq!(ints.data_type(), &DataType::Int64);
        let floats = build_column(&[Some(Value::from(1)), Some(Value::from(1.5))]);
        assert_eq!(floats.data_type(), &DataType::Float64);
        let mixed = build_column(&[Some(Value::from("a")), Some(Value::from(2))]);
        assert_eq!(mixed.as_string::<i32>().value(1), "2");
    }
}
