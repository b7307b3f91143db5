//! Faults under a steady load of bank traffic (issue 7). Each scenario starts the bank, runs
//! random deposits, withdrawals and transfers through two bfaf instances (bank_common/load.rs),
//! injects its faults while the traffic runs, lets the bank settle and checks every invariant
//! (bank_common/checks.rs): each acknowledged operation stored exactly once, every transfer
//! completed or failed, no negative balance, money conserved, statements = events, each
//! service's checkpoints = the last event of its types per partition.
//!
//! Each scenario prints one `RELIABILITY:` line (operations, faults, the pause or recovery
//! measured, events lost, applied twice), counted by the test.
//!
//! Size: `SEQUENT_RELIABILITY_SCALE=small` (default, for CI: the whole file in a few minutes on
//! two cores) or `large` (10x the operations, 5 minutes of chaos):
//! `SEQUENT_RELIABILITY_SCALE=large cargo test -p sequent-tests --test reliability -- --nocapture`.

mod bank_common;

use bank_common::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Scale {
    /// Operations per phase of a scenario (a scenario has 3 or 4 phases around its faults).
    phase: usize,
    clients: usize,
    chaos: Duration,
}

fn scale() -> Scale {
    match std::env::var("SEQUENT_RELIABILITY_SCALE").as_deref() {
        Ok("large") => Scale { phase: 1000, clients: 8, chaos: Duration::from_secs(300) },
        Ok("small") | Ok("") | Err(_) => Scale { phase: 100, clients: 4, chaos: Duration::from_secs(30) },
        Ok(other) => panic!("SEQUENT_RELIABILITY_SCALE={other:?}: use small or large"),
    }
}

/// The services of every scenario: two of each except users (logins are done before the load).
const SERVICES: &[(&str, usize)] = &[("users", 1), ("accounts", 2), ("transfers", 2), ("bfaf", 2)];
/// Generous bound for progress under a fault: the faults are meant to slow things down.
const PROGRESS: Duration = Duration::from_secs(180);

/// The bank with customers and a load that runs until stopped (the plan is larger than any
/// scenario needs).
async fn bank_under_load(setup: Setup<'_>, seed: u64) -> (Bank, Vec<Api>, Customers, Load) {
    let bank = Bank::start_with(setup).await;
    let apis: Vec<Api> = bank.of("bfaf").iter().map(|i| Api::new(&i.url)).collect();
    let mut tally = Tally::default();
    let customers = customers(&apis, 3, 2, 50_000, &mut tally).await;
    let s = scale();
    let load = Load::start(&apis, &customers, plan(seed, s.phase * 100, &customers.accounts), s.clients, tally);
    (bank, apis, customers, load)
}

/// Stops the clients (each finishes the operation in hand); returns what they were told.
async fn stop_load(load: Load) -> Tally {
    load.stop();
    load.finish().await
}

/// Lets the bank settle, checks every invariant and prints the summary line.
async fn finish(name: &str, bank: &Bank, apis: &[Api], customers: &Customers, tally: &Tally, faults: &str, measured: &str) -> Verdict {
    bank.wait_settled(Duration::from_secs(180)).await;
    let verdict = check_bank(bank, &apis[0], customers, tally).await;
    println!(
        "RELIABILITY: {name}: {} operations under load ({} retried requests), faults: {faults}; {measured}; {} transfers completed, {} failed; {} events, {} checkpoints checked; events lost {}, applied twice {}",
        tally.operations(),
        tally.retries,
        verdict.completed,
        verdict.failed,
        verdict.events,
        verdict.checkpoints,
        verdict.lost,
        verdict.twice
    );
    verdict
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// The stream's leader node (index into the cluster's nodes, named n1..n3).
async fn stream_leader(bank: &Bank) -> usize {
    let js = async_nats::jetstream::new(bank.admin.clone());
    let out = Mutex::new(0);
    sequent_tests::wait_until("the EVENTS stream to have a leader", Duration::from_secs(60), || async {
        let info = js.get_stream("EVENTS").await.map_err(|e| e.to_string())?.info().await.map_err(|e| e.to_string())?.clone();
        assert_eq!(info.config.num_replicas, 3, "the stream is replicated 3 times");
        let leader = info.cluster.and_then(|c| c.leader).unwrap_or_default();
        match leader.strip_prefix('n').and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => {
                *out.lock().unwrap() = n - 1;
                Ok::<_, String>(true)
            }
            None => Ok(false),
        }
    })
    .await
    .unwrap();
    out.into_inner().unwrap()
}

#[tokio::test]
async fn nats_cluster_loses_the_stream_leader_then_its_quorum() {
    let _serial = serial().await;
    let s = scale();
    let (mut bank, apis, customers, load) = bank_under_load(Setup { services: SERVICES, extra: &[], cluster: true, gateways: 1 }, 0x5eed_0001).await;
    load.progress(s.phase, PROGRESS).await;

    let first = stream_leader(&bank).await;
    let killed_first = Instant::now();
    bank.nats.cluster().kill9(first).await.unwrap();
    eprintln!("FAULT: stream leader n{} killed with SIGKILL", first + 1);
    // Two nodes keep the quorum: clients and services move to them by themselves.
    load.progress(s.phase, PROGRESS).await;

    let second = stream_leader(&bank).await;
    let killed_second = Instant::now();
    bank.nats.cluster().kill9(second).await.unwrap();
    eprintln!("FAULT: n{} (the new leader) killed with SIGKILL: no quorum", second + 1);
    bank.nats.cluster().restart(first).await.unwrap();
    let restarted_first = Instant::now();
    bank.nats.cluster().restart(second).await.unwrap();
    eprintln!("RESTARTED: n{} and n{}", first + 1, second + 1);
    load.progress(s.phase, PROGRESS).await;
    let end = Instant::now();

    let tally = stop_load(load).await;
    let pause_leader = tally.longest_gap(killed_first, killed_second);
    let pause_quorum = tally.longest_gap(killed_second, end);
    let longest = tally.longest_gap(tally.answered_at.iter().min().copied().unwrap(), end);
    let measured = format!(
        "longest pause between answers: {} after the leader's kill, {} with two nodes down ({} until the first node was back), {} over the whole run",
        secs(pause_leader),
        secs(pause_quorum),
        secs(restarted_first - killed_second),
        secs(longest)
    );
    finish("nats-cluster-R3", &bank, &apis, &customers, &tally, "kill -9 of the stream leader, then of a second node, then both restarted", &measured).await;
}

/// Appends `n` probe events (ids probe-<i>) through the gateways, alternating, each retried
/// with the same id on the other gateway until acknowledged, and every 4th sent once more after
/// its acknowledgement (it must come back as a duplicate). Returns the acknowledged ids.
/// `retried` counts the tries after a failure, `resent` the deliberate re-sends.
async fn probe_appender(gateways: Vec<String>, stop: Arc<std::sync::atomic::AtomicBool>, retried: Arc<AtomicUsize>, resent: Arc<AtomicUsize>) -> Vec<String> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let mut acked = Vec::new();
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        let id = format!("probe-{i}");
        let body = json!({ "events": [{ "id": id, "type": "Probe", "key": format!("probe-{}", i % 8), "expect": "any", "data": { "i": i } }] });
        let mut attempt = 0;
        loop {
            let url = format!("{}/v1/events", gateways[(i + attempt) % gateways.len()]);
            match http.post(&url).json(&body).send().await {
                Ok(r) if r.status().as_u16() == 201 => {
                    // The body can be cut off too when the gateway dies right after answering.
                    let Ok(v) = r.json::<Value>().await else {
                        attempt += 1;
                        retried.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    assert_eq!(v["receipts"][0]["status"], "stored", "{v}");
                    if attempt == 0 && i % 4 == 3 {
                        // A retry of an acknowledged append: absorbed (through whichever
                        // gateway answers: this one may be the one killed right now).
                        let mut tries = 0;
                        let again: Value = loop {
                            let url = format!("{}/v1/events", gateways[(i + tries) % gateways.len()]);
                            if let Ok(r) = http.post(&url).json(&body).send().await {
                                if r.status().as_u16() == 201 {
                                    break r.json().await.unwrap();
                                }
                            }
                            tries += 1;
                            assert!(tries < 600, "{id}: the re-send was never answered");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        };
                        assert_eq!(again["receipts"][0]["duplicate"], true, "{again}");
                        resent.fetch_add(1, Ordering::Relaxed);
                    }
                    break;
                }
                // 503: JetStream did not answer (the outcome is unknown); or the gateway is dead.
                Ok(r) if r.status().as_u16() == 503 => {}
                Ok(r) => panic!("{id}: {} {}", r.status(), r.text().await.unwrap_or_default()),
                Err(_) => {}
            }
            attempt += 1;
            retried.fetch_add(1, Ordering::Relaxed);
            assert!(attempt < 600, "{id} was never acknowledged");
            tokio::time::sleep(Duration::from_millis(50)).await; // a client's retry back-off
        }
        acked.push(id);
        i += 1;
    }
    acked
}

#[tokio::test]
async fn gateway_killed_while_clients_retry_with_the_same_ids() {
    let _serial = serial().await;
    let s = scale();
    let (mut bank, apis, customers, load) = bank_under_load(Setup { services: SERVICES, extra: &[], cluster: false, gateways: 2 }, 0x5eed_0002).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (retried, resent) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let gateways = bank.gateways.iter().map(|g| g.http.clone()).collect();
    let appender = tokio::spawn(probe_appender(gateways, stop.clone(), retried.clone(), resent.clone()));
    load.progress(s.phase, PROGRESS).await;

    // The second gateway dies (services reach both through the queue group; the bfaf's own
    // queries go to the first).
    let killed = Instant::now();
    bank.gateways[1].child.kill9().await.unwrap();
    eprintln!("FAULT: gateway-2 killed with SIGKILL");
    load.progress(s.phase, PROGRESS).await;
    bank.restart_gateway(1).await;
    load.progress(s.phase, PROGRESS).await;
    stop.store(true, Ordering::SeqCst);
    let acked = appender.await.unwrap();

    // Every acknowledged probe once; none twice (also those whose first try had no answer).
    let events = stream_events(&bank.admin).await;
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for e in events.iter().filter(|e| e.event["type"] == "Probe") {
        *counts.entry(e.event["id"].as_str().unwrap()).or_default() += 1;
    }
    let probes_lost = acked.iter().filter(|id| !counts.contains_key(id.as_str())).count();
    let probes_twice: usize = counts.values().map(|n| n - 1).sum();
    assert_eq!((probes_lost, probes_twice), (0, 0), "direct appends: lost, doubled");
    let end = Instant::now();
    let tally = stop_load(load).await;
    let measured = format!(
        "longest pause between bank answers after the kill {}; {} probe appends acknowledged through both gateways ({} retried with the same id after a failure, {} re-sent after their acknowledgement): {probes_lost} lost, {probes_twice} stored twice",
        secs(tally.longest_gap(killed, end)),
        acked.len(),
        retried.load(Ordering::Relaxed),
        resent.load(Ordering::Relaxed)
    );
    finish("gateway-kill-9", &bank, &apis, &customers, &tally, "kill -9 of one of two gateways, restarted later", &measured).await;
}

#[tokio::test]
async fn chaos_kills_random_superclients() {
    let _serial = serial().await;
    let s = scale();
    let (mut bank, apis, customers, load) = bank_under_load(Setup { services: SERVICES, extra: &[], cluster: false, gateways: 1 }, 0x5eed_0003).await;
    load.progress(s.phase / 2, PROGRESS).await;
    let mut rng = Rng(0xc4a05);
    let chaos_started = Instant::now();
    let mut kills = 0;
    let mut longest_recovery = Duration::ZERO;
    while chaos_started.elapsed() < s.chaos {
        // The bank's superclients (not the platform's explorer beside it).
        let pool: Vec<String> = bank.instances.iter().filter(|i| i.service != "explorer").map(|i| i.name.clone()).collect();
        let victim = pool[rng.below(pool.len() as u64) as usize].clone();
        let service = victim.rsplit_once('-').unwrap().0.to_string();
        kills += 1;
        let replacement = format!("{service}-c{kills}");
        let killed = Instant::now();
        bank.replace_instance(&victim, &replacement).await;
        eprintln!("CHAOS: {victim} killed with SIGKILL, {replacement} started");
        // Traffic goes on before the next kill.
        load.progress(3, PROGRESS).await;
        longest_recovery = longest_recovery.max(killed.elapsed());
    }
    let chaos = chaos_started.elapsed();
    let measured = format!("{} of chaos; longest kill-to-traffic-flowing-again (incl. the replacement's start) {}", secs(chaos), secs(longest_recovery));
    let end = Instant::now();
    let tally = stop_load(load).await;
    let measured = format!("{measured}; longest pause between answers {}", secs(tally.longest_gap(chaos_started, end)));
    finish("chaos", &bank, &apis, &customers, &tally, &format!("{kills} kill -9 of random superclients, each restarted (a new instance on the same address)"), &measured).await;
}

#[tokio::test]
async fn redis_loses_its_data_under_running_services() {
    let _serial = serial().await;
    let s = scale();
    let (mut bank, apis, customers, load) = bank_under_load(Setup { services: SERVICES, extra: &[], cluster: false, gateways: 1 }, 0x5eed_0004).await;
    // A witness account the load does not touch: its balance is known at every moment, so any
    // answer about it can be judged. It moved just before the fault.
    let token = apis[0].customer("witness").await;
    let witness = apis[0].open_account(&token).await;
    apis[0].deposit(&token, &witness, 12_345).await;
    apis[0].deposit(&token, &witness, 100).await;
    let reads = Arc::new(Mutex::new((0usize, 0usize, Vec::<String>::new()))); // (right, unavailable, wrong)
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (apis, token, witness, reads, stop) = (apis.clone(), token.clone(), witness.clone(), reads.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let api = &apis[n % apis.len()];
                let (path, check): (String, fn(&Value) -> bool) = if n % 2 == 0 {
                    (format!("/api/accounts/{witness}"), |v| v["balance_cents"] == 12_445)
                } else {
                    (format!("/api/accounts/{witness}/statement?limit=10"), |v| v["entries"].as_array().is_some_and(|e| e.len() == 2) && v["entries"][0]["balance_cents"] == 12_445)
                };
                let answer = api.try_call("GET", &path, Some(&token), None, &[]).await;
                let mut r = reads.lock().unwrap();
                match answer {
                    Ok((200, v)) if check(&v) => r.0 += 1,
                    Ok((502..=504, _)) | Err(_) => r.1 += 1,
                    Ok((status, v)) => r.2.push(format!("{path}: {status} {v}")),
                }
            }
        })
    };
    load.progress(s.phase, PROGRESS).await;

    let what = bank.redis.lose_everything().await.unwrap();
    let lost_at = Instant::now();
    eprintln!("FAULT: {what}");
    let right_before = reads.lock().unwrap().0;
    // Every service notices and rebuilds by itself (or, without events, starts afresh).
    let con = bank.redis.connection().await.unwrap();
    sequent_tests::wait_until("every service to have its state again", PROGRESS, || async {
        for service in ["users", "accounts", "transfers", "bfaf"] {
            let active: Option<String> = redis::cmd("GET").arg(format!("sequent:{{{service}}}:active")).query_async(&mut con.clone()).await.map_err(|e| e.to_string())?;
            if active.is_none() {
                return Err(format!("{service} has no state yet"));
            }
        }
        Ok::<_, String>(true)
    })
    .await
    .unwrap();
    let rebuilt = lost_at.elapsed();
    for service in ["users", "accounts", "transfers", "bfaf"] {
        let noticed = bank.of(service).iter().any(|i| i.child.output().iter().any(|l| l.contains("the state is back")));
        assert!(noticed, "an instance of {service} noticed the loss and restored the state");
    }
    sequent_tests::wait_until("the witness to be read right again", PROGRESS, || async { reads.lock().unwrap().0 > right_before }).await.unwrap();
    let readable = lost_at.elapsed();
    load.progress(s.phase, PROGRESS).await;
    stop.store(true, Ordering::SeqCst);
    reader.await.unwrap();
    let end = Instant::now();
    let (right, unavailable, wrong) = std::mem::take(&mut *reads.lock().unwrap());
    assert!(wrong.is_empty(), "wrong answers about the witness: {wrong:?}");
    let measured = format!(
        "every state rebuilt {} after the loss, the witness read right again after {}; witness reads: {right} right, {unavailable} unavailable (503), {} wrong",
        secs(rebuilt),
        secs(readable),
        wrong.len()
    );
    let tally = stop_load(load).await;
    let gap = tally.longest_gap(lost_at, end);
    finish("redis-lost", &bank, &apis, &customers, &tally, what, &format!("{measured}; longest pause between answers {}", secs(gap))).await;
}

#[tokio::test]
async fn nats_server_frozen_with_sigstop() {
    /// How long the server stays frozen: the fault's length, not a wait for a condition.
    const FROZEN: Duration = Duration::from_secs(4);
    let _serial = serial().await;
    let s = scale();
    let (mut bank, apis, customers, load) = bank_under_load(Setup { services: SERVICES, extra: &[], cluster: false, gateways: 1 }, 0x5eed_0005).await;
    load.progress(s.phase, PROGRESS).await;
    let frozen = Instant::now();
    bank.nats.single().pause().await.unwrap();
    eprintln!("FAULT: nats-server frozen (SIGSTOP)");
    tokio::time::sleep(FROZEN).await;
    bank.nats.single().resume().await.unwrap();
    let resumed = Instant::now();
    eprintln!("RESUMED: nats-server (SIGCONT)");
    load.progress(s.phase, PROGRESS).await;
    let end = Instant::now();
    let tally = stop_load(load).await;
    let first_after = tally.answered_at.iter().filter(|t| **t > resumed).min().map(|t| *t - resumed).unwrap_or_default();
    let measured = format!(
        "frozen {}, first answer {} after SIGCONT, longest pause between answers {}",
        secs(resumed - frozen),
        secs(first_after),
        secs(tally.longest_gap(frozen, end))
    );
    finish("nats-sigstop", &bank, &apis, &customers, &tally, &format!("SIGSTOP of the nats-server for {}, then SIGCONT", secs(FROZEN)), &measured).await;
}
