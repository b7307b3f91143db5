//! The topics a live listener says it pushes to (`bus:add_live_listener(type, fn, {topics =
//! {"key", "data.account_id"}})`): the event's key and string fields of its data. With them the
//! superclient can skip the listener's Lua call when no socket of this instance listens to any
//! of the event's topics, and keeps the listener's pushes to them.

use crate::hub::HubOp;
use sequent_protocol::Event;

/// Where a topic comes from in an event.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Key,
    /// A path into the event's data (`data.a.b` → `["a", "b"]`).
    Data(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveTopics(Vec<Source>);

impl LiveTopics {
    /// Parses the declared sources: `key`, or `data.<field>[.<field>...]`.
    pub fn parse(sources: &[String]) -> Result<LiveTopics, String> {
        if sources.is_empty() {
            return Err("topics is empty; leave it out to run the listener for every event".into());
        }
        let parsed = sources
            .iter()
            .map(|s| match s.as_str() {
                "key" => Ok(Source::Key),
                _ => match s.strip_prefix("data.") {
                    Some(path) if path.split('.').all(|f| !f.is_empty()) => Ok(Source::Data(path.split('.').map(str::to_string).collect())),
                    _ => Err(format!("topic source {s:?} is neither \"key\" nor \"data.<field>\"")),
                },
            })
            .collect::<Result<_, _>>()?;
        Ok(LiveTopics(parsed))
    }

    /// The event's topics: its key and the string values at the data paths (others are skipped).
    pub fn of(&self, event: &Event) -> Vec<String> {
        let data = if self.0.iter().any(|s| matches!(s, Source::Data(_))) { serde_json::from_str(event.data.get()).ok() } else { None };
        let mut topics = Vec::with_capacity(self.0.len());
        for source in &self.0 {
            let topic = match source {
                Source::Key => Some(event.key.as_str()),
                Source::Data(path) => path.iter().try_fold(data.as_ref(), |v, field| v.map(|v: &serde_json::Value| v.get(field))).flatten().and_then(|v| v.as_str()),
            };
            if let Some(t) = topic {
                if !topics.iter().any(|known| known == t) {
                    topics.push(t.to_string());
                }
            }
        }
        topics
    }
}

/// Keeps only the pushes to `declared` topics (a push to an undeclared one would reach its
/// sockets only when a declared topic happened to be listened to as well). True if any was dropped.
pub fn keep_pushes_to(ops: &mut Vec<HubOp>, declared: &[String]) -> bool {
    let mut dropped = false;
    for op in ops.iter_mut() {
        if let HubOp::Push { topics, .. } = op {
            let before = topics.len();
            topics.retain(|t| declared.contains(t));
            dropped |= topics.len() < before;
        }
    }
    ops.retain(|op| !matches!(op, HubOp::Push { topics, .. } if topics.is_empty()));
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(key: &str, data: serde_json::Value) -> Event {
        let json = serde_json::json!({
            "id": "e1", "type": "TransferRequested", "key": key, "version": 1, "seq": 7,
            "time": "2026-12-02T00:00:00Z", "correlation": "c", "producer": { "service": "transfers" }, "data": data,
        });
        serde_json::from_str(&json.to_string()).expect("an event")
    }

    fn topics(sources: &[&str]) -> LiveTopics {
        LiveTopics::parse(&sources.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("valid sources")
    }

    #[test]
    fn the_key_and_string_fields_of_the_data() {
        let e = event("tr-1", serde_json::json!({ "from_account": "acc-1", "to_account": "acc-2", "amount_cents": 5 }));
        assert_eq!(topics(&["key", "data.from_account", "data.to_account"]).of(&e), ["tr-1", "acc-1", "acc-2"]);
    }

    #[test]
    fn nested_paths_missing_fields_and_other_types() {
        let e = event("k", serde_json::json!({ "a": { "b": "deep" }, "n": 3, "same": "k" }));
        assert_eq!(topics(&["data.a.b", "data.n", "data.missing", "data.a.b.c", "key", "data.same"]).of(&e), ["deep", "k"]);
    }

    #[test]
    fn pushes_keep_only_declared_topics() {
        let push = |topics: &[&str]| HubOp::Push { topics: topics.iter().map(|t| t.to_string()).collect(), message: "{}".into() };
        let mut ops = vec![push(&["acc-1", "user:x"]), push(&["user:x"]), HubOp::Join { topic: "a".into(), new_topic: "b".into() }, push(&["acc-1"])];
        assert!(keep_pushes_to(&mut ops, &["acc-1".to_string()]));
        let kept: Vec<String> = ops.iter().map(|op| format!("{op:?}")).collect();
        assert_eq!(kept.len(), 3, "{kept:?}");
        assert!(matches!(&ops[0], HubOp::Push { topics, .. } if topics == &["acc-1"]));
        assert!(matches!(&ops[1], HubOp::Join { .. }));
        let mut ops = vec![push(&["acc-1"])];
        assert!(!keep_pushes_to(&mut ops, &["acc-1".to_string()]));
    }

    #[test]
    fn bad_sources_are_refused() {
        for bad in [vec![], vec!["id".to_string()], vec!["data.".to_string()], vec!["data.a..b".to_string()], vec!["data".to_string()]] {
            assert!(LiveTopics::parse(&bad).is_err(), "{bad:?}");
        }
    }
}
