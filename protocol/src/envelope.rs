//! The event as it is stored in the stream and delivered to readers.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::fmt;

/// Who wrote an event: the service type (or API client) and, for services, the instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Producer {
    pub service: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

/// A stored event. `seq` is assigned by the stream, so it is absent (0) in the stored payload
/// and filled in from the message metadata when the event is read back.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Event {
    /// Position in the stream (global order); always present when an event is read.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[cfg_attr(feature = "openapi", schema(required = true, minimum = 1))]
    pub seq: u64,
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub key: String,
    pub version: u64,
    pub correlation: String,
    #[serde(default)]
    pub causation: Option<String>,
    pub producer: Producer,
    /// UTC, RFC 3339 with microseconds.
    pub time: String,
    /// The event's data: a JSON object.
    // Kept as raw JSON text so it is never parsed and re-serialised on the hot path.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub data: Box<RawValue>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Event {
    /// Parses a stored payload and attaches the stream sequence it was read at.
    pub fn from_stored(payload: &[u8], seq: u64) -> Result<Event, serde_json::Error> {
        let mut event: Event = serde_json::from_slice(payload)?;
        event.seq = seq;
        Ok(event)
    }

    /// The payload written to the stream (without `seq`).
    pub fn to_stored(&self) -> Vec<u8> {
        debug_assert_eq!(self.seq, 0, "seq is assigned by the stream");
        serde_json::to_vec(self).expect("an event always serialises")
    }
}

/// Only the fields needed to continue a key's version chain, parsed cheaply from a stored event.
#[derive(Debug, Clone, Deserialize)]
pub struct EventHead {
    pub id: String,
    pub version: u64,
}

/// What an append expects of its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Append whatever the key's current version is.
    Any,
    /// The event will be the key's version `n`, i.e. the key holds exactly `n` events now.
    /// `"new"` is `Version(0)`.
    Version(u64),
}

impl Serialize for Expect {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Expect::Any => s.serialize_str("any"),
            Expect::Version(n) => s.serialize_u64(*n),
        }
    }
}

impl<'de> Deserialize<'de> for Expect {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Expect;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#"a version number (0, 1, ...), "any" or "new""#)
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Expect, E> {
                Ok(Expect::Version(n))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Expect, E> {
                u64::try_from(n).map(Expect::Version).map_err(|_| {
                    E::custom(format!("expect must not be negative (got {n}); use a version number, \"any\" or \"new\""))
                })
            }
            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Expect, E> {
                Err(E::custom(format!("expect must be a whole number (got {n}), \"any\" or \"new\"")))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Expect, E> {
                match s {
                    "any" => Ok(Expect::Any),
                    "new" => Ok(Expect::Version(0)),
                    other => Err(E::custom(format!(
                        "unknown expect word {other:?}: use a version number, \"any\" or \"new\""
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// An event as a client submits it; the gateway fills in the rest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewEvent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type")]
    pub event_type: String,
    pub key: String,
    pub expect: Expect,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation: Option<String>,
    /// Any JSON object (at most 64 levels deep, at most `--max-data-bytes`).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub data: Box<RawValue>,
}

/// A fresh, time-ordered event id.
pub fn new_event_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The id of the `n`-th event a service emits while handling `handled_id`. Deterministic, so a
/// re-run of the handler emits the same ids and the store absorbs the repeats.
pub fn derived_event_id(service: &str, handled_id: &str, n: u32) -> String {
    const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x5e9c_e4a1_7f0b_4c1e_9d2a_3b6f_8e01_c0de);
    uuid::Uuid::new_v5(&NAMESPACE, format!("{service}\u{1f}{handled_id}\u{1f}{n}").as_bytes()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expect_parses_numbers_and_words() {
        let p = |s: &str| serde_json::from_str::<Expect>(s);
        assert_eq!(p("3").unwrap(), Expect::Version(3));
        assert_eq!(p("\"new\"").unwrap(), Expect::Version(0));
        assert_eq!(p("\"any\"").unwrap(), Expect::Any);
        assert!(p("\"latest\"").unwrap_err().to_string().contains("unknown expect word"));
        assert!(p("-1").unwrap_err().to_string().contains("negative"));
        assert!(p("1.5").unwrap_err().to_string().contains("whole number"));
        assert!(p("true").is_err());
    }

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        let a = derived_event_id("accounts", "e1", 0);
        assert_eq!(a, derived_event_id("accounts", "e1", 0));
        assert_ne!(a, derived_event_id("accounts", "e1", 1));
        assert_ne!(a, derived_event_id("transfers", "e1", 0));
    }

    #[test]
    fn stored_event_round_trips_without_seq() {
        let e = Event {
            seq: 0,
            id: "e1".into(),
            event_type: "Deposited".into(),
            key: "acc-1".into(),
            version: 2,
            correlation: "c1".into(),
            causation: None,
            producer: Producer { service: "accounts".into(), instance: Some("a-1".into()) },
            time: "2026-01-01T00:00:00.000000Z".into(),
            data: RawValue::from_string(r#"{"amount_cents":5}"#.into()).unwrap(),
        };
        let stored = e.to_stored();
        assert!(!String::from_utf8_lossy(&stored).contains("\"seq\""));
        let back = Event::from_stored(&stored, 7).unwrap();
        assert_eq!(back.seq, 7);
        assert_eq!(back.data.get(), r#"{"amount_cents":5}"#);
    }
}

/// The JSON of a stored event with its `seq` added, without parsing and re-serialising it: the
/// stored payload is an object written by [`Event::to_stored`], so `seq` is spliced in front.
pub fn event_json_with_seq(payload: &[u8], seq: u64) -> Result<String, serde_json::Error> {
    let text = std::str::from_utf8(payload).map_err(|e| <serde_json::Error as serde::de::Error>::custom(e.to_string()))?;
    match text.strip_prefix('{') {
        Some(rest) if rest.starts_with('"') => Ok(format!("{{\"seq\":{seq},{rest}")),
        _ => Event::from_stored(payload, seq).map(|e| serde_json::to_string(&e).expect("events serialise")),
    }
}

#[cfg(test)]
mod splice_tests {
    #[test]
    fn splices_seq_in_front() {
        let json = super::event_json_with_seq(br#"{"id":"e","x":1}"#, 9).unwrap();
        assert_eq!(json, r#"{"seq":9,"id":"e","x":1}"#);
        assert!(super::event_json_with_seq(b"[1]", 9).is_err());
    }
}
