//! The bank under concurrent traffic and faults: 10 accounts, 8 clients issuing 500 random
//! transfers, deposits and withdrawals through two bfaf instances, two instances of every
//! service, and one instance of each service killed with SIGKILL half-way. At the end every
//! transfer completed or failed, no balance is or ever was negative, money is conserved, and
//! each account's statement matches its events one for one.

mod bank_common;

use bank_common::*;
use std::time::{Duration, Instant};

const OPS: usize = 500;
const CLIENTS: usize = 8;

#[tokio::test]
async fn concurrent_traffic_survives_kill_9_of_one_instance_per_service() {
    let _serial = serial().await;
    let started = Instant::now();
    let mut bank = Bank::start(&[("users", 2), ("accounts", 2), ("transfers", 2), ("nectar", 2), ("bfaf", 2)], &[]).await;
    eprintln!("STACK: 10 superclients up after {:.1} s", started.elapsed().as_secs_f64());
    let apis: Vec<Api> = bank.of("bfaf").iter().map(|i| Api::new(&i.url)).collect();

    // 5 customers with 2 accounts each, 500.00 in every account.
    let mut tally = Tally::default();
    let customers = customers(&apis, 5, 2, 50_000, &mut tally).await;
    let plan = plan(0x5eed_0000_0000_0004, OPS, &customers.accounts);
    let load = Load::start(&apis, &customers, plan, CLIENTS, tally);

    // Half-way, one instance of every service dies.
    load.progress(OPS / 2, Duration::from_secs(300)).await;
    let killed_at = load.done();
    let mut victims: Vec<Instance> = {
        let (dead, alive): (Vec<Instance>, Vec<Instance>) = bank.instances.drain(..).partition(|i| i.name.ends_with("-2"));
        bank.instances = alive;
        dead
    };
    for v in victims.iter_mut() {
        v.child.kill9().await.unwrap();
    }
    eprintln!("KILLED with SIGKILL: {:?}", victims.iter().map(|v| v.name.clone()).collect::<Vec<_>>());
    let traffic_started = load.started;
    let tally = load.finish().await;
    let traffic = traffic_started.elapsed();
    eprintln!(
        "TRAFFIC: {OPS} operations by {CLIENTS} clients in {:.1} s ({:.0}/s); killed after {killed_at}; {} retries; {} transfers, {} withdrawals refused",
        traffic.as_secs_f64(),
        OPS as f64 / traffic.as_secs_f64(),
        tally.retries,
        tally.transfers.len(),
        tally.refused_withdrawals
    );
    assert!((OPS / 2..OPS).contains(&killed_at), "the kill happened during the traffic");

    // Every saga ends, every service catches up (the survivors took the victims' partitions).
    let settle = Instant::now();
    bank.wait_settled(Duration::from_secs(120)).await;
    eprintln!("SETTLED after {:.1} s", settle.elapsed().as_secs_f64());
    let api = &apis[0];

    // The survivors own every partition; the victims are seen as gone.
    let ops = bank.explorer();
    let admin = ops.admin_token().await;
    sequent_tests::wait_until("operators to see the victims gone and the survivors owning every partition", Duration::from_secs(30), || async {
        let (_, services) = ops.get("/api/admin/services", &admin).await;
        for s in services.as_array().unwrap() {
            let mut owned: Vec<u64> = Vec::new();
            for i in s["instances"].as_array().unwrap() {
                let name = i["instance"].as_str().unwrap();
                if i["live"].as_bool() != Some(!name.ends_with("-2")) {
                    return Err(format!("{s}"));
                }
                owned.extend(i["partitions"].as_array().unwrap().iter().map(|p| p.as_u64().unwrap()));
            }
            owned.sort();
            // A service that consumes no events (the platform's explorer) has no partitions.
            let want: Vec<u64> = if s["consumer_lag"].is_null() || s["service"] == "explorer" { Vec::new() } else { (0..16).collect() };
            if owned != want {
                return Err(format!("{s}"));
            }
        }
        Ok(true)
    })
    .await
    .unwrap();

    // Every transfer ended, nothing lost or doubled, no negative balance, money conserved,
    // statements = events, checkpoints = stream (bank_common/checks.rs).
    let verdict = check_bank(&bank, api, &customers, &tally).await;
    eprintln!("TRANSFERS: {} completed, {} failed", verdict.completed, verdict.failed);
    assert!(verdict.completed > 50, "most transfers went through");
    drop(victims);
    eprintln!("TOTAL: {:.1} s", started.elapsed().as_secs_f64());
}
