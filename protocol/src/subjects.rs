//! The NATS subject layout. Events are published as `ev.<key>.<type>`; the stream's subject
//! transform inserts a partition token, so they are stored as `ev.<p>.<key>.<type>` with
//! `p = fnv1a32(key) % partitions` (the server's `partition()` function). Every filter that
//! reads or checks stored events must use the stored form.

/// Subject a client publishes an event to (before the stream's transform).
pub fn publish_subject(key: &str, event_type: &str) -> String {
    format!("ev.{key}.{event_type}")
}

/// Filter matching every stored event of one key, whatever its partition and type. This is
/// also the filter of the per-key optimistic-concurrency check.
pub fn key_filter(key: &str) -> String {
    format!("ev.*.{key}.*")
}

/// Filter matching every stored event of one type.
pub fn type_filter(event_type: &str) -> String {
    format!("ev.*.*.{event_type}")
}

/// Filter matching one key and one type.
pub fn key_type_filter(key: &str, event_type: &str) -> String {
    format!("ev.*.{key}.{event_type}")
}

/// Filter matching the events of one type in one partition.
pub fn partition_type_filter(partition: u32, event_type: &str) -> String {
    format!("ev.{partition}.*.{event_type}")
}

/// Every stored event.
pub const ALL_EVENTS: &str = "ev.>";

/// More filter subjects than this make the server's matching slow (nats-server #4888).
pub const MAX_FILTERS: usize = 256;

/// The filter subjects for a reader of some types and keys (their cross product; all events
/// when both are empty), validated.
pub fn read_filters<T: AsRef<str>, K: AsRef<str>>(types: &[T], keys: &[K]) -> Result<Vec<String>, String> {
    use crate::validate::{validate_key, validate_type};
    for t in types {
        validate_type(t.as_ref()).map_err(|e| e.to_string())?;
    }
    for k in keys {
        validate_key(k.as_ref()).map_err(|e| e.to_string())?;
    }
    let out: Vec<String> = match (types.is_empty(), keys.is_empty()) {
        (true, true) => vec![ALL_EVENTS.into()],
        (false, true) => types.iter().map(|t| type_filter(t.as_ref())).collect(),
        (true, false) => keys.iter().map(|k| key_filter(k.as_ref())).collect(),
        (false, false) => keys
            .iter()
            .flat_map(|k| types.iter().map(move |t| key_type_filter(k.as_ref(), t.as_ref())))
            .collect(),
    };
    if out.len() > MAX_FILTERS {
        return Err(format!("{} key/type combinations; at most {MAX_FILTERS} are allowed", out.len()));
    }
    Ok(out)
}

/// The stream's input subjects and its partitioning transform.
pub const STREAM_INPUT: &str = "ev.*.*";
pub fn stream_transform_destination(partitions: u32) -> String {
    format!("ev.{{{{partition({partitions},1)}}}}.{{{{wildcard(1)}}}}.{{{{wildcard(2)}}}}")
}

/// Metadata of a stream made by copying another one with a new partition count
/// (`bus-gateway --repartition-from`): the stream copied, its partition count, and the last
/// sequence copied (the copy keeps every sequence). A service's state built on the old stream
/// had applied every event up to it, so its checkpoints become that sequence in every new
/// partition (superclient `state::migrate::repartition`).
pub const META_COPIED_FROM: &str = "sequent.copied_from";
pub const META_PARTITIONS_BEFORE: &str = "sequent.partitions_before";
pub const META_COPIED_TO: &str = "sequent.copied_to_seq";

/// Whether a stored header was an instruction to JetStream's append rather than part of the
/// event: its expectations (`Nats-Expected-*`, checked when the event was stored) and its
/// atomic batch's framing (`Nats-Batch-*`). A copy carries every other header (the event id
/// `Nats-Msg-Id` among them) and is checked by its sequence instead.
pub fn is_append_instruction(header: &str) -> bool {
    let h = header.to_ascii_lowercase();
    h.starts_with("nats-expected-") || h.starts_with("nats-batch-")
}

/// Correlation index: one subject per unit of work, holding the stream sequences of its events.
pub fn correlation_index_subject(correlation: &str) -> String {
    format!("ix.c.{correlation}")
}
pub const INDEX_INPUT: &str = "ix.>";

/// NATS request subject on which gateways take appends from service `service`. Each service's
/// NATS user may publish only to its own, so the subject names the producer reliably.
pub fn append_subject(service: &str) -> String {
    format!("sequent.append.{service}")
}
pub const APPEND_WILDCARD: &str = "sequent.append.*";
pub const GATEWAY_QUEUE_GROUP: &str = "bus-gateway";

/// Splits a stored subject `ev.<p>.<key>.<type>` into (partition, key, type).
pub fn parse_stored_subject(subject: &str) -> Option<(u32, &str, &str)> {
    let mut parts = subject.splitn(4, '.');
    if parts.next()? != "ev" {
        return None;
    }
    let p = parts.next()?.parse().ok()?;
    Some((p, parts.next()?, parts.next()?))
}

/// FNV-1a, 32 bit: the hash nats-server's `partition()` transform uses.
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The partition a key is stored under.
pub fn partition_of(key: &str, partitions: u32) -> u32 {
    fnv1a32(key.as_bytes()) % partitions
}

/// The position of a message a consumer delivered, from its reply subject
/// `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ns>.<pending>` (or the
/// longer form with domain and account hash in front and a token after).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckMeta {
    pub stream_seq: u64,
    pub consumer_seq: u64,
    pub published_ns: i64,
    pub pending: u64,
}

impl AckMeta {
    pub fn parse(reply: &str) -> Option<AckMeta> {
        let mut tokens = [""; 12];
        let mut n = 0;
        for t in reply.split('.') {
            if n == tokens.len() {
                return None;
            }
            tokens[n] = t;
            n += 1;
        }
        if n < 9 || tokens[0] != "$JS" || tokens[1] != "ACK" {
            return None;
        }
        let at = if n == 9 { 5 } else { 7 };
        Some(AckMeta {
            stream_seq: tokens[at].parse().ok()?,
            consumer_seq: tokens[at + 1].parse().ok()?,
            published_ns: tokens[at + 2].parse().ok()?,
            pending: tokens[at + 3].parse().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_positions_from_reply_subjects() {
        let m = AckMeta::parse("$JS.ACK.EVENTS.analyst~1f.1.42.7.1700000000000000000.3").unwrap();
        assert_eq!((m.stream_seq, m.consumer_seq, m.pending), (42, 7, 3));
        let long = AckMeta::parse("$JS.ACK.dom.acchash.EVENTS.analyst~1f.1.42.7.1700000000000000000.3.tok").unwrap();
        assert_eq!((long.stream_seq, long.consumer_seq, long.pending), (42, 7, 3));
        assert!(AckMeta::parse("_INBOX.x").is_none());
    }

    #[test]
    fn partition_consumers_are_told_apart() {
        assert_eq!(partition_of_consumer(&consumer_name("accounts", 3)), Some(3));
        assert_eq!(partition_of_consumer(&consumer_name("my-service", 15)), Some(15));
        assert_eq!(partition_of_consumer("sequent-indexer"), None);
        assert_eq!(partition_of_consumer("analyst-p"), None);
        assert_eq!(partition_of_consumer("a-p1x"), None);
    }

    #[test]
    fn transform_destination_is_mustache() {
        assert_eq!(stream_transform_destination(16), "ev.{{partition(16,1)}}.{{wildcard(1)}}.{{wildcard(2)}}");
    }

    #[test]
    fn builds_read_filters() {
        let none: [&str; 0] = [];
        assert_eq!(read_filters(&none, &none).unwrap(), vec!["ev.>"]);
        assert_eq!(read_filters(&["A"], &["k"]).unwrap(), vec!["ev.*.k.A"]);
        assert!(read_filters(&["A.B"], &none).is_err());
        let many: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
        assert!(read_filters(&none, &many).is_err());
    }

    #[test]
    fn append_instructions_are_told_from_the_events_headers() {
        for h in ["Nats-Expected-Last-Subject-Sequence", "nats-expected-last-sequence", "Nats-Batch-Id", "Nats-Batch-Commit"] {
            assert!(is_append_instruction(h), "{h}");
        }
        for h in ["Nats-Msg-Id", "Nats-TTL", "traceparent"] {
            assert!(!is_append_instruction(h), "{h}");
        }
    }

    #[test]
    fn parses_stored_subjects() {
        assert_eq!(parse_stored_subject("ev.3.acc-1.Deposited"), Some((3, "acc-1", "Deposited")));
        assert_eq!(parse_stored_subject("ix.c.x"), None);
    }

    #[test]
    fn fnv_matches_reference_vectors() {
        assert_eq!(fnv1a32(b""), 0x811c9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9cf968);
    }

    #[test]
    fn wildcards_match_whole_tokens() {
        assert!(matches("ev.>", "ev.1.k.T"));
        assert!(!matches("ev.>", "ev"));
        assert!(matches("ev.*.k", "ev.1.k"));
        assert!(!matches("ev.*.k", "ev.1.k.T"));
        assert!(!matches("_INBOX_a.>", "_INBOX_ab.x"));
        assert!(matches("a.b", "a.b") && !matches("a.b", "a.b.c") && !matches("a.b.c", "a.b"));
    }
}

/// NATS request subject on which a service asks for its consumers to be created or updated.
pub fn provision_subject(service: &str) -> String {
    format!("sequent.provision.{service}")
}
pub const PROVISION_WILDCARD: &str = "sequent.provision.*";

/// NATS request subject on which a principal asks the gateways for a tail: an ephemeral pull
/// consumer the gateway makes for it (nobody else creates consumers), which only it can pull.
pub fn tail_subject(principal: &str) -> String {
    format!("sequent.tail.{principal}")
}
pub const TAIL_WILDCARD: &str = "sequent.tail.*";

/// Where a principal sends the pull requests of its tail `consumer` on `stream` (the events or
/// the index): the gateways relay them to the consumer when it is the principal's, with the
/// principal's own reply subject, so the messages go straight from the server to it.
pub fn pull_subject(principal: &str, stream: &str, consumer: &str) -> String {
    format!("sequent.pull.{principal}.{stream}.{consumer}")
}
pub const PULL_WILDCARD: &str = "sequent.pull.*.*.*";

/// Tail consumers of `principal` are named `<principal>~<nonce>`: `~` is in no principal's name,
/// so the name tells whose a consumer is.
pub fn tail_consumer_prefix(principal: &str) -> String {
    format!("{principal}~")
}

/// The correlation index stream is the event stream's name with this suffix.
pub const INDEX_STREAM_SUFFIX: &str = "_IX";

/// Whether `subject` matches `pattern` by NATS rules: tokens split on `.`, `*` matches one
/// token, `>` (last) one or more.
pub fn matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for p in pattern.split('.') {
        match (p, subject_tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (p, Some(t)) if p == t => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

/// Durable consumer of `service` for `partition`, e.g. `accounts-p03`.
pub fn consumer_name(service: &str, partition: u32) -> String {
    format!("{service}-p{partition:02}")
}

/// Whether `name` is a partition consumer's ([`consumer_name`]): its partition.
pub fn partition_of_consumer(name: &str) -> Option<u32> {
    let (_, p) = name.rsplit_once("-p")?;
    if p.len() < 2 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse().ok()
}

/// Metadata of a partition consumer the gateway made again (it was lost, kept in memory by a
/// nats-server that restarted): the stream's last sequence then. Every event up to it may have
/// been handled before.
pub const MADE_AGAIN_BELOW: &str = "sequent_made_again_below";

/// The priority group through which one instance at a time is pinned to a partition.
pub const PIN_GROUP: &str = "owner";
/// KV bucket of live service instances (`<service>.<instance>` → heartbeat).
pub const MEMBERS_BUCKET: &str = "sequent_members";
/// The stream behind the membership bucket.
pub const MEMBERS_STREAM: &str = "KV_sequent_members";

/// Subject of instance `instance` of `service` in the membership bucket.
pub fn member_subject(service: &str, instance: &str) -> String {
    format!("$KV.{MEMBERS_BUCKET}.{service}.{instance}")
}

/// Filter over the members of `service` (or of every service with `"*"`).
pub fn members_filter(service: &str) -> String {
    format!("$KV.{MEMBERS_BUCKET}.{service}.*")
}
