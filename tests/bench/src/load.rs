//! Fills the stream fast: raw JetStream publishes of events in the gateway's stored form
//! (`ev.<key>.<type>`, which the stream stores as `ev.<p>.<key>.<type>`; the payload is the
//! envelope `Event::to_stored` writes), pipelined with a window of acks in flight. Nothing of
//! this is timed: it only prepares the events the measured readers replay.

use anyhow::Context;
use futures::stream::{FuturesUnordered, StreamExt};
use sequent_protocol::{subjects, Event, Producer};
use serde_json::value::RawValue;
use std::time::{Duration, Instant};

/// Which synthetic events to write.
#[derive(Clone, Copy)]
pub enum Kind {
    /// NectarCredit / NectarDebit over 10,000 keys: what services/examples/nectar.lua rebuilds.
    Nectar,
    /// A transfer's four events (the bank's types), like pyreport/bench/scan_bench.py's.
    Bank,
}

pub fn event(kind: Kind, i: usize) -> (String, Vec<u8>) {
    let (event_type, key, version, service, data) = match kind {
        Kind::Nectar => {
            let (k, version) = (i % 10_000, (i / 10_000) as u64);
            // One debit in four, always covered by the three credits before it.
            let t = if i / 10_000 % 4 == 3 { "NectarDebit" } else { "NectarCredit" };
            (t, format!("nectar-{k}"), version, "nectar", format!(r#"{{"amount":{}}}"#, 10 + k % 90))
        }
        Kind::Bank => {
            let tid = i / 4;
            let t = ["TransferRequested", "AccountDebited", "AccountCredited", "TransferCompleted"][i % 4];
            let (from, to) = (format!("acc-{}", (tid * 7) % 10_000), format!("acc-{}", (tid * 13 + 1) % 10_000));
            let amount = 100 + tid % 5000;
            let (key, data) = match t {
                "TransferRequested" | "TransferCompleted" => (
                    format!("tr-{tid}"),
                    format!(r#"{{"transfer_id":"tr-{tid}","from_account":"{from}","to_account":"{to}","amount_cents":{amount}}}"#),
                ),
                _ => {
                    let key = if t == "AccountDebited" { from } else { to };
                    let data = format!(r#"{{"account_id":"{key}","amount_cents":{amount},"balance_cents":{},"transfer_id":"tr-{tid}","reason":"transfer"}}"#, 1_000_000 - tid % 1000);
                    (key, data)
                }
            };
            let service = if t.starts_with("Transfer") { "transfers" } else { "accounts" };
            (t, key, (tid / 2500) as u64, service, data)
        }
    };
    let e = Event {
        seq: 0,
        id: format!("bench-{i:09}"),
        event_type: event_type.into(),
        key: key.clone(),
        version,
        correlation: format!("corr-{}", i / 4),
        causation: None,
        producer: Producer { service: service.into(), instance: Some("bench-1".into()) },
        time: format!("2026-01-01T00:{:02}:{:02}.{:06}Z", i / 60_000_000 % 60, i / 1_000_000 % 60, i % 1_000_000),
        data: RawValue::from_string(data).expect("valid JSON"),
    };
    (subjects::publish_subject(&key, event_type), e.to_stored())
}

/// Publishes events `0..n` of `kind` as the admin user; returns when every one is acked.
pub async fn load(client: &async_nats::Client, kind: Kind, n: usize) -> anyhow::Result<()> {
    let js = async_nats::jetstream::new(client.clone());
    let started = Instant::now();
    let mut acks = FuturesUnordered::new();
    for i in 0..n {
        let (subject, payload) = event(kind, i);
        acks.push(std::future::IntoFuture::into_future(js.publish(subject, payload.into()).await.context("publishing")?));
        while acks.len() >= 4096 {
            acks.next().await.expect("not empty").context("publish ack")?;
        }
        if i > 0 && i % 200_000 == 0 {
            eprintln!("  loaded {i} events ({:.0}/s)", i as f64 / started.elapsed().as_secs_f64());
        }
    }
    while let Some(ack) = acks.next().await {
        ack.context("publish ack")?;
    }
    eprintln!("  loaded {n} events in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Waits until the gateway's correlation indexer has caught up, so it does not compete with
/// what is measured next.
pub async fn wait_indexer(client: &async_nats::Client) -> anyhow::Result<()> {
    let js = async_nats::jetstream::new(client.clone());
    let stream = js.get_stream("EVENTS").await.context("the EVENTS stream")?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Ok(mut c) = stream.get_consumer::<async_nats::jetstream::consumer::pull::Config>("sequent-indexer").await {
            let info = c.info().await?;
            if info.num_pending == 0 && info.num_ack_pending == 0 {
                return Ok(());
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "the gateway's indexer did not catch up within 10 minutes");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An admin connection (nats/test-users.conf's dev user).
pub async fn admin(url: &str) -> anyhow::Result<async_nats::Client> {
    async_nats::ConnectOptions::with_user_and_password("admin".into(), "admin-dev".into())
        .connect(url)
        .await
        .context("connecting as admin")
}
