//! A steady load of bank traffic: customers with accounts, then clients issuing random
//! deposits, withdrawals and transfers through the bfaf instances, each request retried with
//! its Idempotency-Key until the answer is definite. What the clients were told is tallied, so
//! the invariant checks (checks.rs) can hold the store and the projections to it.

use super::Api;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// splitmix64: a small deterministic generator (a run is reproducible from its seed).
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Debug, Clone)]
pub enum Op {
    Deposit { account: usize, cents: i64 },
    Withdraw { account: usize, cents: i64 },
    Transfer { from: usize, to: String, cents: i64 },
}

/// What the bank acknowledged to the clients.
#[derive(Default)]
pub struct Tally {
    pub deposited: i64,
    pub withdrawn: i64,
    pub refused_withdrawals: usize,
    /// (transfer id, owner index)
    pub transfers: Vec<(String, usize)>,
    /// Event ids of the acknowledged deposits and withdrawals (their statement entries).
    pub entries: Vec<String>,
    /// Requests sent again after a failure or a 502/503/504.
    pub retries: usize,
    /// When each operation got its definite answer (for the longest pause).
    pub answered_at: Vec<Instant>,
}

impl Tally {
    pub fn operations(&self) -> usize {
        self.answered_at.len()
    }

    /// The longest time without any answer between `from` and `to` (the pause the clients saw).
    pub fn longest_gap(&self, from: Instant, to: Instant) -> Duration {
        let mut times: Vec<Instant> = self.answered_at.iter().copied().filter(|t| *t >= from && *t <= to).collect();
        times.sort();
        let mut gap = Duration::ZERO;
        let mut last = from;
        for t in times.into_iter().chain([to]) {
            gap = gap.max(t - last);
            last = t;
        }
        gap
    }
}

/// Customers (their tokens) and their accounts (id, owner index).
#[derive(Clone)]
pub struct Customers {
    pub tokens: Vec<String>,
    pub accounts: Vec<(String, usize)>,
}

/// `users` customers with `per_user` accounts each, `cents` deposited in every account.
pub async fn customers(apis: &[Api], users: usize, per_user: usize, cents: i64, tally: &mut Tally) -> Customers {
    let mut c = Customers { tokens: Vec::new(), accounts: Vec::new() };
    for u in 0..users {
        let api = &apis[u % apis.len()];
        let token = api.customer(&format!("cust{u}")).await;
        for _ in 0..per_user {
            let id = api.open_account(&token).await;
            let v = api.deposit(&token, &id, cents).await;
            tally.deposited += cents;
            tally.entries.push(v["entry"]["entry_id"].as_str().expect("a deposit answers its entry").to_string());
            c.accounts.push((id, u));
        }
        c.tokens.push(token);
    }
    c
}

/// `ops` random operations over `accounts`: 30% deposits, 30% withdrawals (some refused), 40%
/// transfers (some to an unknown account or to the same account, which fail).
pub fn plan(seed: u64, ops: usize, accounts: &[(String, usize)]) -> Vec<Op> {
    let mut rng = Rng(seed);
    (0..ops)
        .map(|_| {
            let account = rng.below(accounts.len() as u64) as usize;
            match rng.below(10) {
                0..=2 => Op::Deposit { account, cents: 1 + rng.below(30_000) as i64 },
                3..=5 => Op::Withdraw { account, cents: 1 + rng.below(40_000) as i64 },
                _ => {
                    let to = match rng.below(20) {
                        0 => "acc-0badc0de".to_string(),
                        1 => accounts[account].0.clone(),
                        _ => accounts[rng.below(accounts.len() as u64) as usize].0.clone(),
                    };
                    Op::Transfer { from: account, to, cents: 1 + rng.below(25_000) as i64 }
                }
            }
        })
        .collect()
}

/// Sends one request, retrying with the same Idempotency-Key on the next bfaf instance when
/// the connection fails or the bank answers 502/503/504, until the outcome is definite. The
/// pause between tries is a client's retry back-off, not a wait for a condition.
#[allow(clippy::too_many_arguments)]
pub async fn perform(apis: &[Api], first: usize, method: &str, path: &str, token: &str, body: Value, key: &str, retries: &AtomicUsize) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(120);
    for attempt in 0.. {
        let api = &apis[(first + attempt) % apis.len()];
        match api.try_call(method, path, Some(token), Some(body.clone()), &[("idempotency-key", key)]).await {
            Ok((s, v)) if ![502, 503, 504].contains(&s) => return (s, v),
            Ok((s, v)) => eprintln!("retrying {method} {path} after {s} {v}"),
            // A dead or restarting bfaf instance: connection refused.
            Err(_) => {}
        }
        retries.fetch_add(1, Ordering::Relaxed);
        assert!(Instant::now() < deadline, "{method} {path} got no definite answer within 120 s");
        tokio::time::sleep(Duration::from_millis(50 * (attempt as u64 % 8 + 1))).await;
    }
    unreachable!()
}

/// Clients working through a plan until it is done or [`Load::stop`] is called.
pub struct Load {
    done: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    retries: Arc<AtomicUsize>,
    clients: Vec<tokio::task::JoinHandle<()>>,
    pub started: Instant,
}

impl Load {
    pub fn start(apis: &[Api], customers: &Customers, plan: Vec<Op>, clients: usize, tally: Tally) -> Load {
        let queue: Arc<Mutex<VecDeque<(usize, Op)>>> = Arc::new(Mutex::new(plan.into_iter().enumerate().collect()));
        let mut load = Load {
            done: Arc::default(),
            stop: Arc::default(),
            tally: Arc::new(Mutex::new(tally)),
            retries: Arc::default(),
            clients: Vec::new(),
            started: Instant::now(),
        };
        for _ in 0..clients {
            let (queue, tally, retries, done, stop) = (queue.clone(), load.tally.clone(), load.retries.clone(), load.done.clone(), load.stop.clone());
            let (apis, c) = (apis.to_vec(), customers.clone());
            load.clients.push(tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let Some((i, op)) = queue.lock().unwrap().pop_front() else { break };
                    run_op(&apis, &c, i, op, &tally, &retries).await;
                    done.fetch_add(1, Ordering::SeqCst);
                }
            }));
        }
        load
    }

    /// Operations answered so far.
    pub fn done(&self) -> usize {
        self.done.load(Ordering::SeqCst)
    }

    /// Waits until `n` more operations than now were answered (progress under the fault).
    pub async fn progress(&self, n: usize, timeout: Duration) {
        let target = self.done() + n;
        sequent_tests::wait_until(&format!("{n} more operations to be answered"), timeout, || async { self.done() >= target }).await.unwrap();
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Waits for the clients (they finish the operation in hand) and returns the tally.
    pub async fn finish(self) -> Tally {
        for c in self.clients {
            c.await.expect("a client panicked");
        }
        let mut tally = std::mem::take(&mut *self.tally.lock().unwrap());
        tally.retries = self.retries.load(Ordering::Relaxed);
        tally
    }
}

async fn run_op(apis: &[Api], c: &Customers, i: usize, op: Op, tally: &Mutex<Tally>, retries: &AtomicUsize) {
    let key = format!("op-{i}");
    match op {
        Op::Deposit { account, cents } => {
            let (id, owner) = &c.accounts[account];
            let (s, v) = perform(apis, i, "POST", &format!("/api/accounts/{id}/deposits"), &c.tokens[*owner], json!({ "amount_cents": cents }), &key, retries).await;
            assert_eq!(s, 201, "deposit {i}: {v}");
            let mut t = tally.lock().unwrap();
            t.deposited += cents;
            t.entries.push(v["entry"]["entry_id"].as_str().unwrap_or_else(|| panic!("deposit {i} answers its entry: {v}")).to_string());
        }
        Op::Withdraw { account, cents } => {
            let (id, owner) = &c.accounts[account];
            let (s, v) = perform(apis, i, "POST", &format!("/api/accounts/{id}/withdrawals"), &c.tokens[*owner], json!({ "amount_cents": cents }), &key, retries).await;
            match s {
                201 => {
                    let mut t = tally.lock().unwrap();
                    t.withdrawn += cents;
                    t.entries.push(v["entry"]["entry_id"].as_str().unwrap_or_else(|| panic!("withdrawal {i} answers its entry: {v}")).to_string());
                }
                422 => {
                    assert_eq!(v["code"], "insufficient funds", "{v}");
                    assert!(v["balance_cents"].as_i64().unwrap() < cents, "refused although the balance sufficed: {v}");
                    tally.lock().unwrap().refused_withdrawals += 1;
                }
                _ => panic!("withdrawal {i}: {s} {v}"),
            }
        }
        Op::Transfer { from, to, cents } => {
            let (id, owner) = &c.accounts[from];
            let body = json!({ "from_account": id, "to_account": to, "amount_cents": cents });
            let (s, v) = perform(apis, i, "POST", "/api/transfers", &c.tokens[*owner], body, &key, retries).await;
            assert_eq!(s, 202, "transfer {i}: {v}");
            tally.lock().unwrap().transfers.push((v["transfer_id"].as_str().unwrap().to_string(), *owner));
        }
    }
    tally.lock().unwrap().answered_at.push(Instant::now());
}
