//! Sandbox escapes and denial of service from inside a Lua script (issue 7), beyond what
//! superclient_http.rs covers: every attempt fails its own call with a clear error (or gets
//! nothing) and the instance keeps serving, with the standard library intact.

mod superclient_common;

use serde_json::Value;
use std::time::{Duration, Instant};
use superclient_common::*;

#[tokio::test]
async fn escapes_and_bombs_fail_their_call_and_the_instance_keeps_serving() {
    let _serial = serial().await;
    let stack = stack().await;
    let args = ["--lua-instructions", "5000000", "--lua-memory-mb", "32", "--lua-route-states", "2"];
    let inst = stack.instance("superclient_sandbox.lua", "sandbox-a", &args).await;
    let mut child = inst.child;
    let url = |p: &str| format!("{}{p}", inst.http);
    let mut report = Vec::new();
    // (attempt, status, what the answer or the log must say)
    let cases: &[(&str, u16, &str)] = &[
        ("loadstring", 500, "global 'loadstring'"),
        ("package", 500, "global 'package'"),
        ("require-io", 500, "global 'require'"),
        ("load-env-io", 200, "\"nil\""),
        ("load-bytecode", 500, "binary chunk"),
        ("getmetatable-string", 200, "false"),
        ("string-meta-method", 500, "string is read-only"),
        ("string-meta-index", 500, "attempt to index"),
        ("rawset-string", 500, "read-only"),
        ("setmetatable-string", 500, "table expected"),
        ("setmetatable-library", 500, "protected metatable"),
        ("string.rep", 500, "too large"),
        ("string.rep-sep", 500, "memory"),
        ("string-doubling", 500, "memory"),
        ("table-growth", 500, "memory"),
        ("coroutine-bomb", 500, "memory"),
        ("infinite-loop", 500, "Lua instructions"),
        ("deep-recursion", 500, "memory"),
        ("coroutine-loop", 500, "Lua instructions"),
        ("coroutine-yield-loop", 500, "Lua instructions"),
        ("pcall-in-coroutine", 500, "Lua instructions"),
        ("tostring-error", 500, ""),
        ("tostring-loop", 500, ""),
        ("error-table", 500, ""),
        ("error-nil", 500, ""),
        ("xpcall-handler-error", 500, "error in error handling"),
        ("xpcall-handler-loop", 500, "Lua instructions"),
        ("gc-loop", 500, "__gc metamethods are not allowed"),
        ("churn", 200, ""),
        ("churn", 200, ""),
    ];
    // SANDBOX_ONLY=<attempt> runs one attempt (when looking into one).
    let only = std::env::var("SANDBOX_ONLY").ok();
    for (name, want, says) in cases.iter().filter(|(n, _, _)| only.as_deref().is_none_or(|o| o == *n)) {
        let started = Instant::now();
        let (status, body) = tokio::time::timeout(Duration::from_secs(30), get_json(&url(&format!("/try/{name}"))))
            .await
            .unwrap_or_else(|_| panic!("{name}: no answer within 30 s"));
        let took = started.elapsed();
        assert_eq!(status, *want, "{name}: {body}");
        assert!(took < Duration::from_secs(20), "{name} took {took:?}");
        if *want == 500 {
            let id = body["detail"].as_str().unwrap_or_default();
            assert!(id.contains("error id"), "{name}: a 500 names an error id: {body}");
            // The cause is logged with the error id.
            let line = child.wait_for_line(&format!("path=\"/try/{name}\""), Duration::from_secs(5)).await.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(line.contains(says), "{name}: the log should say {says:?}: {line}");
        } else if !says.is_empty() {
            assert!(body.to_string().contains(says), "{name}: {body}");
        }
        // The instance keeps serving, and its string library is untouched in every state.
        for _ in 0..4 {
            let (s, v) = get_json(&url("/ok")).await;
            assert_eq!((s, v["upper"].clone(), v["len"].clone()), (200, Value::from("ABC"), Value::from(3)), "after {name}: {v}");
        }
        report.push(format!("ATTACK: lua sandbox: GET /try/{name} -> {status} in {:.2} s, then /ok served, changed: nothing", took.as_secs_f64()));
    }
    for line in report {
        println!("{line}");
    }
}

/// Requests `/ok` back to back until `stop` is set; returns how many answers came and the
/// longest wait for one.
async fn witness(url: String, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> (usize, Duration) {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let (mut answers, mut longest) = (0, Duration::ZERO);
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let started = Instant::now();
        let r = client.get(&url).send().await.expect("the witness is answered");
        assert_eq!(r.status().as_u16(), 200, "the witness is answered");
        longest = longest.max(started.elapsed());
        answers += 1;
    }
    (answers, longest)
}

/// Issue 13: C functions the instruction hook never interrupts (`table.move` over 2^50
/// elements, a `__len` of 2^50 behind `table.insert`, backtracking patterns) are bounded: with
/// an instruction budget too large to matter, each bomb's request ends with a 500 once the call
/// has run for --lua-timeout, while a witness keeps getting answers from the same instance,
/// two bombs at a time (two such requests used to take the service down for good).
#[tokio::test]
async fn c_function_and_pattern_bombs_end_within_the_time_limit_while_others_are_served() {
    let _serial = serial().await;
    let stack = stack().await;
    let limit = Duration::from_secs(1);
    let args = ["--lua-instructions", "1000000000000", "--lua-timeout", "1s", "--lua-route-states", "4", "--max-attempts", "3", "--retry-delay", "100ms"];
    let inst = stack.instance("superclient_sandbox.lua", "sandbox-time", &args).await;
    let mut child = inst.child;
    let url = |p: &str| format!("{}{p}", inst.http);

    // Honest work first: the bounded functions answer as Lua does.
    let (s, v) = get_json(&url("/try/patterns")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["result"],
        "key,value ; 5,7 ; hell0 w0rld ; aabbcc ; <hello> <world> ; ann is 7 ; -a-b-c- ; one|two|three ; 2 ; 6 ; 3,5 ; 2 ; 2 ; 1,1,2,3 ; 0,2,3,9 ; 1,3,5,9",
        "{v}"
    );
    // C's quadratic plain search (2^22 x 2^21 bytes) is linear now.
    let started = Instant::now();
    let (s, v) = get_json(&url("/try/plain-find")).await;
    assert_eq!((s, v["result"].as_str()), (200, Some("nil")), "{v}");
    assert!(started.elapsed() < limit, "plain find took {:?}", started.elapsed());

    let bombs = [
        "table.move",
        "table.move-string",
        "table.insert-len",
        "table.remove-len",
        "table.concat-index",
        "table.sort-index",
        "find-bomb",
        "match-bomb",
        "gmatch-bomb",
        "gsub-bomb",
        "gsub-fn-bomb",
    ];
    let mut report = Vec::new();
    for name in bombs {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watching = tokio::spawn(witness(url("/ok"), stop.clone()));
        let started = Instant::now();
        let bomb = url(&format!("/try/{name}"));
        let (a, b) = tokio::join!(get_json(&bomb), get_json(&bomb));
        let took = started.elapsed();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (answers, longest) = watching.await.unwrap();
        for (status, body) in [&a, &b] {
            assert_eq!(*status, 500, "{name}: {body}");
        }
        // Stopped by the clock (the instruction budget is out of reach), within the limit plus
        // what a loaded machine adds; a bomb that also allocates may hit the state's memory
        // limit first, which stops it as surely.
        let line = child.wait_for_line(&format!("path=\"/try/{name}\""), Duration::from_secs(5)).await.unwrap();
        assert!(line.contains("--lua-timeout") || line.contains("ran out of memory"), "{name}: stopped by the time or memory limit: {line}");
        assert!(took < limit * 4, "{name}: two bombs took {took:?} (limit {limit:?} each)");
        // The witness was answered throughout: more than once while the bombs ran, and none
        // of its requests waiting for a bomb to end (below). How many depends on the load.
        assert!(answers >= 2, "{name}: the witness got {answers} answers in {took:?}");
        // A bomb inside a C function cannot yield until its limit stops it, so it holds its
        // worker thread that long; a witness request the runtime had queued on that worker (its
        // not-stealable next-task slot) waits for it once, on a loaded machine. Never longer.
        assert!(longest < limit * 2, "{name}: the witness waited {longest:?} for an answer");
        let (s, v) = get_json(&url("/ok")).await;
        assert_eq!(s, 200, "after {name}: {v}");
        report.push(format!(
            "ATTACK: lua sandbox (time): two GET /try/{name} at once -> 500, 500 in {:.2} s (limit {:?}); a witness got {answers} answers meanwhile, longest wait {:.3} s; changed: nothing",
            took.as_secs_f64(),
            limit,
            longest.as_secs_f64()
        ));
    }

    // An event whose handler runs a pattern bomb is stopped each time, retried and parked; the
    // other keys are handled meanwhile.
    for i in 0..10 {
        let r = stack.append("example", "Tried", &format!("fine-{i}"), serde_json::json!({ "kind": "fine" })).await;
        assert!(r.all_stored(), "{r:?}");
        if i == 2 {
            let r = stack.append("example", "Tried", "bomb-1", serde_json::json!({ "kind": "bomb" })).await;
            assert!(r.all_stored(), "{r:?}");
        }
    }
    let expected: std::collections::BTreeMap<String, i64> = (0..10).map(|i| (format!("fine-{i}"), 1)).collect();
    stack.wait_counts("example", &expected, Duration::from_secs(60)).await;
    sequent_tests::wait_until("bomb-1 to be parked", Duration::from_secs(60), || async {
        let (ok, list) = stack.command(&["parked", "list", "example"]).await;
        ok && list.contains("bomb-1")
    })
    .await
    .unwrap();
    let (_, list) = stack.command(&["parked", "list", "example"]).await;
    assert!(list.contains("--lua-timeout"), "parked for running too long: {list}");
    assert_eq!(stack.get_int("example", "count:bomb-1").await, None, "nothing of the bomb's event was applied");
    let (s, _) = get_json(&url("/ok")).await;
    assert_eq!(s, 200);
    report.push("ATTACK: lua sandbox (time): an event whose handler runs a pattern bomb -> stopped at --lua-timeout on each attempt, parked; 10 other keys handled meanwhile; changed: nothing of the bomb's event".into());
    for line in report {
        println!("{line}");
    }
}
