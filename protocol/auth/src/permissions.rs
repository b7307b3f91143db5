//! The NATS permissions of each principal, derived from what it is (a service with its
//! declaration, or a reader) and the deployment's layout. Allow lists only: anything not
//! listed is refused, so a subject added to the platform later is closed until a rule here
//! opens it.
//!
//! Nobody here may create, update or delete a consumer: the gateway makes the services'
//! partition consumers and the readers' tails. Every principal receives only under its own
//! inbox prefix ([`inbox_prefix`]), which its client must use for replies.

use crate::principal::{Kind, Principal};
use sequent_protocol::subjects;
use serde::Serialize;

/// Where the deployment keeps its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The event stream (the gateway's `--stream`).
    pub stream: String,
    /// The correlation index stream.
    pub index_stream: String,
    /// Partitions per service type.
    pub partitions: u32,
}

impl Layout {
    pub fn new(stream: &str, partitions: u32) -> Layout {
        Layout { stream: stream.to_string(), index_stream: format!("{stream}{}", subjects::INDEX_STREAM_SUFFIX), partitions }
    }
}

/// What a principal may publish and subscribe to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
}

/// The prefix of a principal's reply subjects: `_INBOX_<name>`. Its client must make its
/// inboxes under it (async-nats: `ConnectOptions::custom_inbox_prefix`).
pub fn inbox_prefix(name: &str) -> String {
    format!("_INBOX_{name}")
}

impl Permissions {
    pub fn of(principal: &Principal, layout: &Layout) -> Permissions {
        match principal.kind {
            Kind::Service => service(&principal.name, layout),
            Kind::Reader => reader(&principal.name, layout),
        }
    }

    /// The `nats` part of a user JWT's claims with these permissions.
    pub fn claims(&self) -> serde_json::Value {
        serde_json::json!({
            "pub": { "allow": self.publish },
            "sub": { "allow": self.subscribe },
            "subs": -1, "data": -1, "payload": -1,
            "type": "user", "version": 2,
        })
    }

    /// Whether a publish on `subject` is allowed (NATS wildcard rules: `*` one token, `>` the rest).
    pub fn may_publish(&self, subject: &str) -> bool {
        self.publish.iter().any(|p| subjects::matches(p, subject))
    }

    pub fn may_subscribe(&self, subject: &str) -> bool {
        self.subscribe.iter().any(|p| subjects::matches(p, subject))
    }
}

/// Reading a stream without consumers: its info, its consumers' info (their lag, for
/// operators' views; configuration and counts only, no data) and direct gets.
fn read_stream(stream: &str, out: &mut Vec<String>) {
    out.push(format!("$JS.API.STREAM.INFO.{stream}"));
    out.push(format!("$JS.API.CONSUMER.INFO.{stream}.*"));
    out.push(format!("$JS.API.DIRECT.GET.{stream}"));
    out.push(format!("$JS.API.DIRECT.GET.{stream}.>"));
}

/// Asking the gateways for tails and pulling them (the gateways check the consumer is the
/// principal's before relaying a pull).
fn tails(name: &str, out: &mut Vec<String>) {
    out.push(subjects::tail_subject(name));
    out.push(format!("sequent.pull.{name}.>"));
}

/// A service type: appends as itself; pulls, acks, unpins and resets its own partition
/// consumers (and reads their state); asks for its consumers and tails; reads the event
/// stream; keeps its instances' heartbeats in the membership bucket and reads everyone's.
fn service(name: &str, layout: &Layout) -> Permissions {
    let stream = &layout.stream;
    let mut publish = vec![subjects::append_subject(name), subjects::provision_subject(name), "$JS.API.INFO".to_string()];
    read_stream(stream, &mut publish);
    tails(name, &mut publish);
    for p in 0..layout.partitions {
        let c = subjects::consumer_name(name, p);
        for verb in ["MSG.NEXT", "UNPIN", "RESET"] {
            publish.push(format!("$JS.API.CONSUMER.{verb}.{stream}.{c}"));
        }
        publish.push(format!("$JS.ACK.{stream}.{c}.>"));
    }
    publish.push(format!("$KV.{}.{name}.>", subjects::MEMBERS_BUCKET));
    read_stream(subjects::MEMBERS_STREAM, &mut publish);
    Permissions { publish, subscribe: vec![format!("{}.>", inbox_prefix(name))] }
}

/// A reader (an analyst, an explorer): both streams by direct gets, live tails.
fn reader(name: &str, layout: &Layout) -> Permissions {
    let mut publish = vec!["$JS.API.INFO".to_string()];
    read_stream(&layout.stream, &mut publish);
    read_stream(&layout.index_stream, &mut publish);
    tails(name, &mut publish);
    Permissions { publish, subscribe: vec![format!("{}.>", inbox_prefix(name))] }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::Principal;

    fn layout() -> Layout {
        Layout::new("EVENTS", 16)
    }

    fn perms(name: &str, kind: Kind) -> Permissions {
        Permissions::of(&Principal::new(name, kind, "x", None), &layout())
    }

    #[test]
    fn nobody_creates_changes_or_deletes_consumers() {
        for p in [perms("accounts", Kind::Service), perms("analyst", Kind::Reader)] {
            for subject in [
                "$JS.API.CONSUMER.CREATE.EVENTS",
                "$JS.API.CONSUMER.CREATE.EVENTS.accounts-p03",
                "$JS.API.CONSUMER.CREATE.EVENTS.accounts-p03.ev.>",
                "$JS.API.CONSUMER.DURABLE.CREATE.EVENTS.accounts-p03",
                "$JS.API.CONSUMER.DELETE.EVENTS.accounts-p03",
                "$JS.API.CONSUMER.CREATE.KV_sequent_members",
                "$JS.API.CONSUMER.CREATE.KV_sequent_members.x",
                "$JS.API.STREAM.UPDATE.EVENTS",
                "$JS.API.STREAM.PURGE.EVENTS",
                "$JS.API.STREAM.MSG.DELETE.EVENTS",
                "$KV.sequent_principals.accounts",
            ] {
                assert!(!p.may_publish(subject), "{subject} must be refused");
            }
        }
    }

    #[test]
    fn a_service_touches_only_its_own_consumers_and_appends_only_as_itself() {
        let p = perms("accounts", Kind::Service);
        for own in ["$JS.API.CONSUMER.MSG.NEXT.EVENTS.accounts-p00", "$JS.API.CONSUMER.RESET.EVENTS.accounts-p15", "$JS.ACK.EVENTS.accounts-p07.1.2.3.4.5"] {
            assert!(p.may_publish(own), "{own}");
        }
        for foreign in [
            "$JS.API.CONSUMER.MSG.NEXT.EVENTS.transfers-p00",
            "$JS.API.CONSUMER.UNPIN.EVENTS.transfers-p00",
            "$JS.ACK.EVENTS.transfers-p07.1.2.3.4.5",
            "$JS.API.CONSUMER.MSG.NEXT.EVENTS.accounts-p16",
            "$JS.API.CONSUMER.MSG.NEXT.EVENTS.sequent-indexer",
            "sequent.append.transfers",
            "sequent.provision.transfers",
            "sequent.tail.analyst",
            "$KV.sequent_members.transfers.i-1",
            "ev.acc-1.AccountDebited",
            "ix.c.x",
        ] {
            assert!(!p.may_publish(foreign), "{foreign} must be refused");
        }
        assert!(p.may_publish("sequent.append.accounts") && p.may_publish("$KV.sequent_members.accounts.i-1"));
        assert!(p.may_publish("$JS.API.DIRECT.GET.EVENTS.ev.3.acc-1.AccountDebited"));
    }

    #[test]
    fn a_service_on_a_repartitioned_stream_gets_its_rights_there_and_not_on_the_old_one() {
        // The layout of a gateway started on a copy (`--repartition-from EVENTS --stream
        // EVENTS2 --partitions 32`): what the auth callout gives a service then.
        let p = Permissions::of(&Principal::new("accounts", Kind::Service, "x", None), &Layout::new("EVENTS2", 32));
        for own in [
            "$JS.API.CONSUMER.MSG.NEXT.EVENTS2.accounts-p31",
            "$JS.ACK.EVENTS2.accounts-p00.1.2.3.4.5",
            "$JS.API.CONSUMER.INFO.EVENTS2.accounts-p31",
            "$JS.API.STREAM.INFO.EVENTS2",
            "$JS.API.DIRECT.GET.EVENTS2.ev.3.acc-1.AccountDebited",
            "sequent.append.accounts",
            "sequent.provision.accounts",
        ] {
            assert!(p.may_publish(own), "{own}");
        }
        for gone in ["$JS.API.CONSUMER.MSG.NEXT.EVENTS2.accounts-p32", "$JS.API.CONSUMER.MSG.NEXT.EVENTS.accounts-p00", "$JS.API.DIRECT.GET.EVENTS", "$JS.API.STREAM.INFO.EVENTS"] {
            assert!(!p.may_publish(gone), "{gone} must be refused");
        }
    }

    #[test]
    fn everyone_receives_only_under_its_own_inbox() {
        let p = perms("bfaf", Kind::Service);
        assert!(p.may_subscribe("_INBOX_bfaf.abc.1"));
        for s in ["_INBOX_accounts.abc", "_INBOX.abc", ">", "ev.>", "sequent.append.accounts", "$JS.ACK.EVENTS.accounts-p00.>", "sequent.live.accounts.x"] {
            assert!(!p.may_subscribe(s), "{s}");
        }
        // `_INBOX_bfaf` must not open `_INBOX_bfaf2`.
        assert!(!perms("bfaf2", Kind::Service).may_subscribe("_INBOX_bfaf.x"));
        assert!(!p.may_subscribe("_INBOX_bfaf2.x"));
    }

    #[test]
    fn a_reader_reads_and_writes_nothing() {
        let p = perms("analyst", Kind::Reader);
        assert!(p.may_publish("$JS.API.DIRECT.GET.EVENTS_IX") && p.may_publish("sequent.tail.analyst"));
        assert!(p.may_publish(&subjects::pull_subject("analyst", "events", "analyst~x1")));
        assert!(!p.may_publish(&subjects::pull_subject("accounts", "events", "accounts~x1")));
        for s in ["sequent.append.analyst", "sequent.provision.analyst", "$JS.API.CONSUMER.MSG.NEXT.EVENTS.accounts-p00", "$KV.sequent_members.analyst.x"] {
            assert!(!p.may_publish(s), "{s}");
        }
    }

    #[test]
    fn user_claims_carry_the_lists() {
        let c = perms("analyst", Kind::Reader).claims();
        assert_eq!(c["type"], "user");
        assert_eq!(c["sub"]["allow"][0], "_INBOX_analyst.>");
    }
}
