//! Stored event payloads → Arrow columns.
//!
//! The payload is the JSON written by `sequent_protocol::Event::to_stored` (the test at the end
//! checks that both sides agree). It is parsed with borrowed strings and `data` kept as raw
//! JSON text, and appended straight into Arrow builders: no intermediate objects.

use crate::error::{Error, Result};
use crate::query::RowFilter;
use crate::timefmt::parse_rfc3339_us;
use arrow_array::builder::{Int64Builder, StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

/// The envelope columns, in order. `producer` is the producing service, `producer_instance`
/// the instance that wrote it (null for HTTP clients).
pub const COLUMNS: [&str; 11] = [
    "seq",
    "id",
    "type",
    "key",
    "version",
    "correlation",
    "causation",
    "producer",
    "producer_instance",
    "time",
    "data",
];

pub mod col {
    pub const SEQ: usize = 0;
    pub const ID: usize = 1;
    pub const TYPE: usize = 2;
    pub const KEY: usize = 3;
    pub const VERSION: usize = 4;
    pub const CORRELATION: usize = 5;
    pub const CAUSATION: usize = 6;
    pub const PRODUCER: usize = 7;
    pub const PRODUCER_INSTANCE: usize = 8;
    pub const TIME: usize = 9;
    pub const DATA: usize = 10;
}

pub fn time_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The schema of every events table pyreport returns (before optional flattened fields).
pub fn schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new("seq", DataType::Int64, false),
                Field::new("id", DataType::Utf8, false),
                Field::new("type", DataType::Utf8, false),
                Field::new("key", DataType::Utf8, false),
                Field::new("version", DataType::Int64, false),
                Field::new("correlation", DataType::Utf8, false),
                Field::new("causation", DataType::Utf8, true),
                Field::new("producer", DataType::Utf8, false),
                Field::new("producer_instance", DataType::Utf8, true),
                Field::new("time", time_type(), true),
                Field::new("data", DataType::Utf8, false),
            ]))
        })
        .clone()
}

#[derive(Deserialize)]
pub struct ProducerRef<'a> {
    #[serde(borrow)]
    pub service: Cow<'a, str>,
    #[serde(default, borrow, deserialize_with = "optional_str")]
    pub instance: Option<Cow<'a, str>>,
}

/// An optional string borrowed from the payload when it has no escapes (serde only borrows a
/// bare `Cow<str>`; inside an `Option` it would allocate every time).
fn optional_str<'de: 'a, 'a, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<Cow<'a, str>>, D::Error> {
    struct Text;
    impl<'de> serde::de::Visitor<'de> for Text {
        type Value = Cow<'de, str>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string")
        }
        fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> std::result::Result<Self::Value, E> {
            Ok(Cow::Borrowed(v))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Self::Value, E> {
            Ok(Cow::Owned(v.to_string()))
        }
        fn visit_string<E: serde::de::Error>(self, v: String) -> std::result::Result<Self::Value, E> {
            Ok(Cow::Owned(v))
        }
    }
    struct Optional;
    impl<'de> serde::de::Visitor<'de> for Optional {
        type Value = Option<Cow<'de, str>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string or null")
        }
        fn visit_none<E: serde::de::Error>(self) -> std::result::Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<Self::Value, D::Error> {
            d.deserialize_str(Text).map(Some)
        }
    }
    d.deserialize_option(Optional)
}

/// A stored event, borrowed from its payload.
#[derive(Deserialize)]
pub struct StoredRef<'a> {
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    pub event_type: Cow<'a, str>,
    #[serde(borrow)]
    pub key: Cow<'a, str>,
    pub version: u64,
    #[serde(borrow)]
    pub correlation: Cow<'a, str>,
    #[serde(default, borrow, deserialize_with = "optional_str")]
    pub causation: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub producer: ProducerRef<'a>,
    #[serde(borrow)]
    pub time: Cow<'a, str>,
    #[serde(borrow)]
    pub data: &'a RawValue,
}

impl<'a> StoredRef<'a> {
    pub fn parse(payload: &'a [u8]) -> std::result::Result<StoredRef<'a>, serde_json::Error> {
        // One vectorised UTF-8 check of the whole payload, then a parser that trusts it (the
        // slice reader would validate every string again).
        let text = std::str::from_utf8(payload).map_err(<serde_json::Error as serde::de::Error>::custom)?;
        serde_json::from_str(text)
    }
}

/// Rows per Arrow batch, and the data bytes after which a batch is cut early.
pub const BATCH_ROWS: usize = 64 * 1024;
const BATCH_BYTES: usize = 256 * 1024 * 1024;

pub struct EventBuilder {
    seq: Int64Builder,
    id: StringBuilder,
    event_type: StringBuilder,
    key: StringBuilder,
    version: Int64Builder,
    correlation: StringBuilder,
    causation: StringBuilder,
    producer: StringBuilder,
    producer_instance: StringBuilder,
    time: TimestampMicrosecondBuilder,
    data: StringBuilder,
    len: usize,
    bytes: usize,
}

impl Default for EventBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBuilder {
    pub fn new() -> Self {
        let n = 1024;
        EventBuilder {
            seq: Int64Builder::with_capacity(n),
            id: StringBuilder::with_capacity(n, n * 36),
            event_type: StringBuilder::with_capacity(n, n * 16),
            key: StringBuilder::with_capacity(n, n * 12),
            version: Int64Builder::with_capacity(n),
            correlation: StringBuilder::with_capacity(n, n * 36),
            causation: StringBuilder::with_capacity(n, n * 36),
            producer: StringBuilder::with_capacity(n, n * 8),
            producer_instance: StringBuilder::with_capacity(n, n * 8),
            time: TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC"),
            data: StringBuilder::with_capacity(n, n * 128),
            len: 0,
            bytes: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn full(&self) -> bool {
        self.len >= BATCH_ROWS || self.bytes >= BATCH_BYTES
    }

    pub fn append(&mut self, seq: u64, e: &StoredRef<'_>, time_us: Option<i64>) {
        self.seq.append_value(seq as i64);
        self.id.append_value(&e.id);
        self.event_type.append_value(&e.event_type);
        self.key.append_value(&e.key);
        self.version.append_value(e.version as i64);
        self.correlation.append_value(&e.correlation);
        self.causation.append_option(e.causation.as_deref());
        self.producer.append_value(&e.producer.service);
        self.producer_instance.append_option(e.producer.instance.as_deref());
        self.time.append_option(time_us);
        let data = e.data.get();
        self.data.append_value(data);
        self.len += 1;
        self.bytes += data.len() + e.id.len() + e.correlation.len() + 64;
    }

    pub fn finish(&mut self) -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.seq.finish()),
            Arc::new(self.id.finish()),
            Arc::new(self.event_type.finish()),
            Arc::new(self.key.finish()),
            Arc::new(self.version.finish()),
            Arc::new(self.correlation.finish()),
            Arc::new(self.causation.finish()),
            Arc::new(self.producer.finish()),
            Arc::new(self.producer_instance.finish()),
            Arc::new(self.time.finish()),
            Arc::new(self.data.finish()),
        ];
        self.len = 0;
        self.bytes = 0;
        RecordBatch::try_new(schema(), columns).expect("builders match the schema")
    }
}

/// Whether a scan goes on after a batch or a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// Turns raw messages into filtered batches for a sink, applying the row filter and limit,
/// and counts payloads that are not Sequent events (reported as a warning).
pub struct Collector<'q, F: FnMut(RecordBatch) -> Result<Flow>> {
    builder: EventBuilder,
    filter: RowFilter<'q>,
    limit: Option<u64>,
    rows: u64,
    sink: F,
    pub skipped: u64,
    pub first_skip: Option<String>,
    stopped: bool,
}

impl<'q, F: FnMut(RecordBatch) -> Result<Flow>> Collector<'q, F> {
    pub fn new(filter: RowFilter<'q>, limit: Option<u64>, sink: F) -> Self {
        Collector { builder: EventBuilder::new(), filter, limit, rows: 0, sink, skipped: 0, first_skip: None, stopped: false }
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Parses one stored message and keeps it if it matches.
    pub fn push(&mut self, seq: u64, payload: &[u8]) -> Result<Flow> {
        if self.stopped || self.limit.is_some_and(|l| self.rows >= l) {
            self.stopped = true;
            return Ok(Flow::Stop);
        }
        let event = match StoredRef::parse(payload) {
            Ok(e) => e,
            Err(e) => {
                self.skipped += 1;
                if self.first_skip.is_none() {
                    self.first_skip = Some(format!("seq {seq}: {e}"));
                }
                return Ok(Flow::Continue);
            }
        };
        let time_us = parse_rfc3339_us(&event.time);
        if !self.filter.matches(seq, &event.event_type, &event.key, &event.correlation, time_us) {
            return Ok(Flow::Continue);
        }
        self.builder.append(seq, &event, time_us);
        self.rows += 1;
        if self.builder.full() && self.flush()? == Flow::Stop {
            self.stopped = true;
            return Ok(Flow::Stop);
        }
        if self.limit.is_some_and(|l| self.rows >= l) {
            self.stopped = true;
            return Ok(Flow::Stop);
        }
        Ok(Flow::Continue)
    }

    /// Hands on a batch built elsewhere (already filtered), after the rows collected so far.
    pub fn forward(&mut self, batch: RecordBatch) -> Result<Flow> {
        if self.flush()? == Flow::Stop {
            return Ok(Flow::Stop);
        }
        self.rows += batch.num_rows() as u64;
        (self.sink)(batch)
    }

    fn flush(&mut self) -> Result<Flow> {
        if self.builder.is_empty() {
            return Ok(Flow::Continue);
        }
        let batch = self.builder.finish();
        (self.sink)(batch)
    }

    /// Hands the last rows to the sink.
    pub fn finish(&mut self) -> Result<()> {
        self.flush().map(|_| ())
    }

    pub fn skip_warning(&self) -> Option<String> {
        (self.skipped > 0).then(|| {
            format!(
                "{} message(s) in the stream are not Sequent events and were skipped (first at {})",
                self.skipped,
                self.first_skip.as_deref().unwrap_or("?")
            )
        })
    }
}

/// Checks that batches read from somewhere else (a cache file) have the envelope columns.
pub fn check_schema(found: &Schema, what: &str) -> Result<()> {
    let want = schema();
    if found.fields().len() != want.fields().len()
        || found.fields().iter().zip(want.fields()).any(|(a, b)| a.name() != b.name() || a.data_type() != b.data_type())
    {
        return Err(Error::Cache(format!(
            "{what} has columns {:?}, not the ones this pyreport writes ({:?}): it was written by another \
             version; delete the cache folder and sync again",
            found.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>(),
            COLUMNS
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int64Type, TimestampMicrosecondType};
    use sequent_protocol::{Event, Producer};

    fn event(causation: Option<&str>, instance: Option<&str>) -> Event {
        Event {
            seq: 0,
            id: "e-1".into(),
            event_type: "AccountDebited".into(),
            key: "acc-7".into(),
            version: 3,
            correlation: "c-\"quoted\"".into(),
            causation: causation.map(Into::into),
            producer: Producer { service: "accounts".into(), instance: instance.map(Into::into) },
            time: "2026-11-27T03:04:05.123456Z".into(),
            data: RawValue::from_string(r#"{"amount_cents":500,"nested":{"a":[1,2]}}"#.into()).unwrap(),
        }
    }

    #[test]
    fn reads_what_the_protocol_writes() {
        let mut b = EventBuilder::new();
        for (c, i) in [(Some("e-0"), Some("a-1")), (None, None)] {
            let stored = event(c, i).to_stored();
            let parsed = StoredRef::parse(&stored).unwrap();
            assert!(matches!(parsed.causation, None | Some(Cow::Borrowed(_))));
            b.append(42, &parsed, parse_rfc3339_us(&parsed.time));
        }
        let batch = b.finish();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.column(col::SEQ).as_primitive::<Int64Type>().value(0), 42);
        assert_eq!(batch.column(col::VERSION).as_primitive::<Int64Type>().value(0), 3);
        assert_eq!(batch.column(col::TYPE).as_string::<i32>().value(0), "AccountDebited");
        assert_eq!(batch.column(col::CORRELATION).as_string::<i32>().value(0), "c-\"quoted\"");
        assert_eq!(batch.column(col::CAUSATION).as_string::<i32>().value(0), "e-0");
        assert!(batch.column(col::CAUSATION).is_null(1));
        assert_eq!(batch.column(col::PRODUCER).as_string::<i32>().value(1), "accounts");
        assert!(batch.column(col::PRODUCER_INSTANCE).is_null(1));
        assert_eq!(batch.column(col::DATA).as_string::<i32>().value(0), r#"{"amount_cents":500,"nested":{"a":[1,2]}}"#);
        let t = batch.column(col::TIME).as_primitive::<TimestampMicrosecondType>().value(0);
        assert_eq!(t, parse_rfc3339_us("2026-11-27T03:04:05.123456Z").unwrap());
        assert_eq!(batch.schema(), schema());
    }
}
