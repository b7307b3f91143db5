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
