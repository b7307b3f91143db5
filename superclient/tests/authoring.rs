//! `superclient new` and `superclient test`, run as a user would (the binary, no servers): the
//! skeleton passes its own test; the talk's scripts pass theirs (tests/lua/seed/); a failing
//! expectation fails the run with the test's line and what was sent.

use std::path::{Path, PathBuf};
use std::process::Command;

fn superclient(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_superclient")).args(args).output().expect("superclient runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("superclient-authoring-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn lua(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/lua").join(name).to_string_lossy().into_owned()
}

#[test]
fn a_new_service_passes_its_own_test() {
    let dir = temp_dir("new");
    let (ok, out) = superclient(&["new", "fraud-alerts", "--dir", &dir.to_string_lossy()]);
    assert!(ok, "{out}");
    for file in ["fraud-alerts.lua", "fraud-alerts_test.lua", "sequent-api.lua", ".luarc.json"] {
        assert!(dir.join(file).is_file(), "{file} was not written: {out}");
    }
    let script = dir.join("fraud-alerts.lua").to_string_lossy().into_owned();
    let (ok, out) = superclient(&["test", &script]);
    assert!(ok, "the skeleton fails its own test:\n{out}");
    assert!(out.contains("2 passed, 0 failed"), "{out}");
    // Never overwrites.
    let (ok, out) = superclient(&["new", "fraud-alerts", "--dir", &dir.to_string_lossy()]);
    assert!(!ok && out.contains("exists already"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failing_expectation_fails_the_run_and_says_why() {
    let dir = temp_dir("fail");
    let (ok, out) = superclient(&["new", "shop", "--dir", &dir.to_string_lossy()]);
    assert!(ok, "{out}");
    let test = dir.join("wrong_test.lua");
    std::fs::write(&test, "test(\"wrong\", function()\n  given(\"ShopRequested\", \"k\", {})\n  expect_sent(\"ShopDone\", \"k\", { count = 5 })\nend)\n").unwrap();
    let (ok, out) = superclient(&["test", &dir.join("shop.lua").to_string_lossy(), &test.to_string_lossy()]);
    assert!(!ok, "{out}");
    assert!(out.contains("FAIL  wrong") && out.contains("wrong_test.lua:3:"), "{out}");
    assert!(out.contains("ShopDone on k {\"count\":1"), "the failure shows what was sent: {out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_talks_scripts_and_an_all_types_listener_pass_their_tests_without_servers() {
    for script in ["seed/nectar.lua", "seed/account.lua", "seed/deposit_route.lua", "all_types.lua", "partitioned_ledger.lua"] {
        let (ok, out) = superclient(&["test", &lua(script)]);
        assert!(ok, "{script}:\n{out}");
        assert!(out.contains(" passed, 0 failed"), "{out}");
    }
}
