//! The event stream kept in memory, for `superclient test` (no NATS, no gateway): appends with
//! the gateway's rules (one atomic batch, per-key versions checked against `expect`, retries of
//! a stored id absorbed, validation), and the reads `bus:last_event` and `bus:events_after` make.
//!
//! Rules, each a unit test below:
//! - the n-th event of a key has version n (from 0); `expect` names the new event's version;
//! - a batch is stored whole or not at all: the first event that does not meet its expectation
//!   gets `conflict` (with the key's current version), the others of the batch `aborted`;
//! - an id already stored is answered with its receipt (`duplicate`), nothing is stored twice;
//! - a malformed event, or one of a type the producer did not declare among its appends (when
//!   it declares any), is refused with the gateway's reasons and nothing of the batch is stored.

use sequent_protocol::envelope::new_event_id;
use sequent_protocol::validate::{validate_new_event, Limits};
use sequent_protocol::{Event, Expect, NewEvent, Producer, Receipt};
use std::collections::HashMap;

/// The stored events, in stream order (`seq` = position + 1).
#[derive(Debug, Default)]
pub struct MemoryLog {
    events: Vec<Event>,
    /// Event id → its position.
    ids: HashMap<String, usize>,
    /// Key → how many events it has.
    counts: HashMap<String, u64>,
}

/// UTC now, as the gateway stamps events.
pub fn now_rfc3339() -> String {
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    time::OffsetDateTime::now_utc().format(&format).expect("UTC timestamps always format")
}

impl MemoryLog {
    pub fn new() -> MemoryLog {
        MemoryLog::default()
    }

    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Appends `batch` for `producer` as the gateway would. `appends`: the types the producer
    /// declared (empty: not checked). `Err`: the whole request is refused (nothing stored).
    pub fn append(&mut self, batch: Vec<NewEvent>, producer: &Producer, appends: &[String]) -> Result<Vec<Receipt>, String> {
        if batch.is_empty() {
            return Err("a batch must hold at least one event".into());
        }
        for (index, e) in batch.iter().enumerate() {
            if let Err(reason) = validate_new_event(e, &Limits::default()) {
                return Ok(invalid(batch.len(), index, reason.to_string()));
            }
            if !appends.is_empty() && !appends.contains(&e.event_type) {
                return Err(format!(
                    "{} may not append {:?}: it is not among the types the service declares in appends ({})",
                    producer.service,
                    e.event_type,
                    appends.join(", ")
                ));
            }
        }
        // Decide every event first (versions count the batch's earlier events), then store.
        let mut next: HashMap<&str, u64> = HashMap::new();
        let mut decided = Vec::with_capacity(batch.len());
        let mut conflict = None;
        for (i, e) in batch.iter().enumerate() {
            if let Some(&at) = e.id.as_ref().and_then(|id| self.ids.get(id)) {
                decided.push(Err(at));
                continue;
            }
            let count = *next.get(e.key.as_str()).unwrap_or(self.counts.get(&e.key).unwrap_or(&0));
            match e.expect {
                Expect::Version(v) if v != count => {
                    conflict = Some((i, v, count));
                    break;
                }
                _ => {}
            }
            next.insert(&e.key, count + 1);
            decided.push(Ok(count));
        }
        if let Some((bad, expected, count)) = conflict {
            return Ok(batch
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let id = e.id.clone().unwrap_or_default();
                    if i == bad {
                        Receipt::Conflict { id, key: e.key.clone(), expected, current_version: count.checked_sub(1), next_version: count }
                    } else {
                        Receipt::Aborted { id, key: e.key.clone() }
                    }
                })
                .collect());
        }
        let time = now_rfc3339();
        let mut receipts = Vec::with_capacity(batch.len());
        for (e, d) in batch.into_iter().zip(decided) {
            let version = match d {
                Err(at) => {
                    let s = &self.events[at];
                    receipts.push(Receipt::Stored { id: s.id.clone(), key: s.key.clone(), seq: s.seq, version: s.version, duplicate: true });
                    continue;
                }
                Ok(v) => v,
            };
            let id = e.id.unwrap_or_else(new_event_id);
            let seq = self.events.len() as u64 + 1;
            let stored = Event {
                seq,
                correlation: e.correlation.unwrap_or_else(|| id.clone()),
                id: id.clone(),
                event_type: e.event_type,
                key: e.key.clone(),
                version,
                causation: e.causation,
                producer: producer.clone(),
                time: time.clone(),
                data: e.data,
            };
            self.ids.insert(id.clone(), self.events.len());
            self.counts.insert(e.key.clone(), version + 1);
            self.events.push(stored);
            receipts.push(Receipt::Stored { id, key: e.key, seq, version, duplicate: false });
        }
        Ok(receipts)
    }

    /// The key's last event.
    pub fn last(&self, key: &str) -> Option<&Event> {
        self.events.iter().rev().find(|e| e.key == key)
    }

    /// Up to `limit` of the key's events after stream position `seq`, oldest first.
    pub fn after(&self, key: &str, seq: u64, limit: usize) -> Vec<Event> {
        self.events.iter().filter(|e| e.key == key && e.seq > seq).take(limit).cloned().collect()
    }
}

fn invalid(len: usize, index: usize, reason: String) -> Vec<Receipt> {
    (0..len).map(|i| if i == index { Receipt::Invalid { index, reason: reason.clone() } } else { Receipt::Invalid { index: i, reason: format!("event {index} of the batch is invalid") } }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    fn ev(id: &str, key: &str, expect: Expect) -> NewEvent {
        NewEvent {
            id: Some(id.into()),
            event_type: "Happened".into(),
            key: key.into(),
            expect,
            correlation: None,
            causation: None,
            data: RawValue::from_string("{}".into()).unwrap(),
        }
    }

    fn producer() -> Producer {
        Producer { service: "svc".into(), instance: None }
    }

    #[test]
    fn versions_count_per_key_from_zero() {
        let mut log = MemoryLog::new();
        let r = log.append(vec![ev("a", "k", Expect::Version(0)), ev("b", "k", Expect::Version(1)), ev("c", "j", Expect::Any)], &producer(), &[]).unwrap();
        assert!(matches!(&r[1], Receipt::Stored { version: 1, seq: 2, .. }));
        assert!(matches!(&r[2], Receipt::Stored { version: 0, seq: 3, .. }));
        assert_eq!(log.last("k").unwrap().id, "b");
        assert_eq!(log.after("k", 1, 10).len(), 1);
        assert_eq!(log.last("k").unwrap().correlation, "b", "an event from outside starts its own correlation");
    }

    #[test]
    fn a_conflict_stores_nothing_of_its_batch() {
        let mut log = MemoryLog::new();
        log.append(vec![ev("a", "k", Expect::Any)], &producer(), &[]).unwrap();
        let r = log.append(vec![ev("b", "j", Expect::Version(0)), ev("c", "k", Expect::Version(0))], &producer(), &[]).unwrap();
        assert!(matches!(&r[0], Receipt::Aborted { .. }));
        assert!(matches!(&r[1], Receipt::Conflict { current_version: Some(0), next_version: 1, expected: 0, .. }));
        assert_eq!(log.events().len(), 1);
    }

    #[test]
    fn retries_are_absorbed() {
        let mut log = MemoryLog::new();
        log.append(vec![ev("a", "k", Expect::Version(0))], &producer(), &[]).unwrap();
        let r = log.append(vec![ev("a", "k", Expect::Version(0))], &producer(), &[]).unwrap();
        assert!(matches!(&r[0], Receipt::Stored { duplicate: true, version: 0, .. }));
        assert_eq!(log.events().len(), 1);
    }

    #[test]
    fn undeclared_and_malformed_events_are_refused() {
        let mut log = MemoryLog::new();
        let e = log.append(vec![ev("a", "k", Expect::Any)], &producer(), &["Other".into()]).unwrap_err();
        assert!(e.contains("appends"), "{e}");
        let r = log.append(vec![ev("a", "bad key", Expect::Any)], &producer(), &[]).unwrap();
        assert!(matches!(&r[0], Receipt::Invalid { .. }));
        assert!(log.events().is_empty());
    }
}
