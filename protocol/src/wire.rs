//! Append requests and replies, the same JSON over HTTP and over NATS request/reply.

use crate::envelope::NewEvent;
use crate::validate::{validate_batch_len, validate_new_event, Limits};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// `{"events": [...], "instance": "accounts-1"?}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppendRequest {
    pub events: Vec<NewEvent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

/// The outcome for one submitted event, in submission order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Receipt {
    /// In the stream at `seq`, as the key's `version`. `duplicate` is true when this was a
    /// retry of an event already stored: nothing new was written.
    Stored { id: String, key: String, seq: u64, version: u64, duplicate: bool },
    /// The key was not at the expected version. `current_version` is the version of its last
    /// event (null when it has none); the next append must expect `next_version`.
    Conflict { id: String, key: String, expected: u64, current_version: Option<u64>, next_version: u64 },
    /// The event was malformed; nothing of the batch was written.
    Invalid { index: usize, reason: String },
    /// The event was fine, but another event of the same batch was refused, so none was written.
    Aborted { id: String, key: String },
}

impl Receipt {
    pub fn is_stored(&self) -> bool {
        matches!(self, Receipt::Stored { .. })
    }
}

/// Errors that concern a whole request rather than one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    NotFound,
    TooLarge,
    Unauthorized,
    Forbidden,
    /// The store did not answer in time; the outcome is unknown. Retry with the same ids.
    Unavailable,
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

/// The reply to an append: receipts, or an error for the whole request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendReply {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub receipts: Vec<Receipt>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl AppendReply {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        AppendReply { receipts: Vec::new(), error: Some(ErrorBody { code, message: message.into() }) }
    }
    pub fn all_stored(&self) -> bool {
        self.error.is_none() && !self.receipts.is_empty() && self.receipts.iter().all(Receipt::is_stored)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAppendRequest<'a> {
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
    #[serde(default)]
    instance: Option<String>,
}

/// Parses and validates an append body. On failure the reply says what was wrong: an error for
/// a body that is not an append request at all, or one `invalid` receipt per bad event.
pub fn parse_append(body: &[u8], limits: &Limits) -> Result<AppendRequest, AppendReply> {
    let raw: RawAppendRequest = serde_json::from_slice(body).map_err(|e| {
        AppendReply::error(
            ErrorCode::BadRequest,
            format!(r#"the body is not an append request ({e}); expected {{"events": [{{"type", "key", "expect", "data"}}]}}"#),
        )
    })?;
    validate_batch_len(raw.events.len(), limits).map_err(|e| AppendReply::error(ErrorCode::BadRequest, e.to_string()))?;
    let mut events = Vec::with_capacity(raw.events.len());
    let mut invalid = Vec::new();
    for (index, value) in raw.events.iter().enumerate() {
        let parsed = serde_json::from_str::<NewEvent>(value.get())
            .map_err(|e| format!("events[{index}]: {e}"))
            .and_then(|ev| validate_new_event(&ev, limits).map(|()| ev).map_err(|e| format!("events[{index}]: {e}")));
        match parsed {
            Ok(ev) => events.push(ev),
            Err(reason) => invalid.push(Receipt::Invalid { index, reason }),
        }
    }
    if !invalid.is_empty() {
        return Err(AppendReply { receipts: invalid, error: None });
    }
    Ok(AppendRequest { events, instance: raw.instance })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits() -> Limits {
        Limits::default()
    }

    #[test]
    fn parses_a_good_request() {
        let body = br#"{"events":[{"type":"Opened","key":"acc-1","expect":"new","data":{"owner":"a"}}]}"#;
        let req = parse_append(body, &limits()).unwrap();
        assert_eq!(req.events.len(), 1);
        assert_eq!(req.events[0].data.get(), r#"{"owner":"a"}"#);
    }

    #[test]
    fn reports_each_bad_event_with_its_index() {
        let body = br#"{"events":[
            {"type":"Opened","key":"acc-1","expect":"new","data":{}},
            {"type":"Opened","key":"a.b","expect":"new","data":{}},
            {"type":"Opened","key":"acc-2","expect":"soon","data":{}},
            {"type":"Opened","key":"acc-3","expect":0,"data":[1]}
        ]}"#;
        let reply = parse_append(body, &limits()).unwrap_err();
        let reasons: Vec<_> = reply
            .receipts
            .iter()
            .map(|r| match r {
                Receipt::Invalid { index, reason } => (*index, reason.clone()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(reasons.len(), 3);
        assert!(reasons[0].0 == 1 && reasons[0].1.contains("key"));
        assert!(reasons[1].0 == 2 && reasons[1].1.contains("unknown expect word"));
        assert!(reasons[2].0 == 3 && reasons[2].1.contains("JSON object"));
    }

    #[test]
    fn refuses_missing_fields_unknown_fields_and_empty_batches() {
        assert!(parse_append(br#"{"events":[{"key":"k","expect":0,"data":{}}]}"#, &limits()).is_err());
        assert!(parse_append(br#"{"events":[{"type":"T","key":"k","expect":0,"data":{},"x":1}]}"#, &limits()).is_err());
        let empty = parse_append(br#"{"events":[]}"#, &limits()).unwrap_err();
        assert_eq!(empty.error.unwrap().code, ErrorCode::BadRequest);
        let not_json = parse_append(b"{nope", &limits()).unwrap_err();
        assert!(not_json.error.unwrap().message.contains("not an append request"));
    }

    #[test]
    fn receipts_serialise_with_a_status_tag() {
        let r = Receipt::Conflict { id: "e".into(), key: "k".into(), expected: 1, current_version: Some(4), next_version: 5 };
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains(r#""status":"conflict""#) && json.contains(r#""current_version":4"#), "{json}");
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_append(&bytes, &limits());
        }

        #[test]
        fn deep_nesting_is_refused_not_overflowed(depth in 100usize..5000) {
            let data = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let body = format!(r#"{{"events":[{{"type":"T","key":"k","expect":0,"data":{data}}}]}}"#);
            prop_assert!(parse_append(body.as_bytes(), &limits()).is_err());
        }
    }
}

/// A service asks the gateway (on `sequent.provision.<service>`) for its durable consumers:
/// one per partition, each filtered to the event types the service handles.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionRequest {
    pub types: Vec<String>,
    /// How long an unacknowledged event waits before it is redelivered, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_wait_ms: Option<u64>,
    /// How long a partition stays pinned to an instance that stopped pulling, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_timeout_ms: Option<u64>,
    /// How many events of a partition may be delivered and not acked yet (the worker's batches
    /// in hand).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ack_pending: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProvisionReply {
    #[serde(default)]
    pub stream: String,
    #[serde(default)]
    pub partitions: u32,
    /// Consumer names, index = partition.
    #[serde(default)]
    pub consumers: Vec<String>,
    /// The priority group the consumers are pinned through.
    #[serde(default)]
    pub group: String,
    /// KV bucket where instances announce themselves.
    #[serde(default)]
    pub members_bucket: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// A principal asks the gateways (on `sequent.tail.<principal>`) for a tail of the event stream
/// or of the correlation index: an ephemeral, unacknowledged pull consumer, pulled through
/// `sequent.pull.<principal>.<stream>.<consumer>` (see `subjects::pull_subject`). It goes away
/// a minute after its last pull.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TailRequest {
    /// The stream to read: the event stream (the default) or its correlation index.
    #[serde(default)]
    pub stream: TailStream,
    /// Subject filters (none: everything).
    #[serde(default)]
    pub filter_subjects: Vec<String>,
    #[serde(default)]
    pub start: TailStart,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TailStream {
    #[default]
    Events,
    Index,
}

impl TailStream {
    /// The token naming it in pull subjects.
    pub fn token(self) -> &'static str {
        match self {
            TailStream::Events => "events",
            TailStream::Index => "index",
        }
    }

    pub fn from_token(token: &str) -> Option<TailStream> {
        match token {
            "events" => Some(TailStream::Events),
            "index" => Some(TailStream::Index),
            _ => None,
        }
    }
}

/// Where a tail begins.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "at")]
pub enum TailStart {
    /// From the first message.
    #[default]
    All,
    /// With the messages stored from now on.
    New,
    /// From this stream sequence.
    Seq { seq: u64 },
    /// From the first message stored at or after this time (RFC 3339).
    Time { time: String },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TailReply {
    /// The consumer's name, for the pull subject.
    #[serde(default)]
    pub consumer: String,
    /// Messages it had to deliver when it was made.
    #[serde(default)]
    pub pending: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}
