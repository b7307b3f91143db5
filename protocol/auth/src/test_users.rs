//! The NATS users of the test harnesses and benchmarks, `nats/test-users.conf`: the same
//! accounts as a deployment (`nats/callout.conf`: admin, gateway and sys unrestricted), and
//! instead of the auth callout one static user per test principal with exactly the
//! permissions [`Permissions::of`] gives it in a deployment. So every test runs under the
//! production rules, from one source. The passwords are public (`<name>-dev`): never use the
//! file for anything reachable.

use crate::permissions::{Layout, Permissions};
use crate::principal::{Kind, Principal};

/// The service users: the demo bank's services, the platform's explorer and the tests' own (`example`, `test`).
pub const SERVICES: &[&str] = &["accounts", "users", "transfers", "nectar", "bfaf", "explorer", "example", "test"];
/// The reader users (the analyst of pyreport and the tests).
pub const READERS: &[&str] = &["analyst"];
/// Unrestricted users, as in a deployment.
const OPERATORS: &[&str] = &["admin", "gateway"];

/// Partitions the test users' permissions cover: more than the default 16, because a test
/// makes a deployment with 64 (`tests/tests/partitions.rs`).
pub const PARTITIONS: u32 = 64;

/// The public development password of test user `name`.
pub fn password(name: &str) -> String {
    format!("{name}-dev")
}

/// The whole `nats/test-users.conf` for `layout`.
pub fn conf(layout: &Layout) -> String {
    let mut users = Vec::new();
    for name in OPERATORS {
        users.push(format!("      {{ user: {name}, password: {} }}", password(name)));
    }
    let principals = SERVICES.iter().map(|n| (n, Kind::Service)).chain(READERS.iter().map(|n| (n, Kind::Reader)));
    for (name, kind) in principals {
        let permissions = Permissions::of(&Principal::new(name, kind, "unused", None), layout);
        users.push(format!(
            "      {{ user: {name}, password: {}, permissions: {{\n        publish: {{ allow: [{}] }}\n        subscribe: {{ allow: [{}] }}\n      }} }}",
            password(name),
            quoted(&permissions.publish),
            quoted(&permissions.subscribe),
        ));
    }
    format!(
        "# GENERATED from sequent_auth::test_users (protocol/auth/src/test_users.rs): do not edit;\n\
         # `SEQUENT_BLESS=1 cargo test -p sequent-auth test_users` rewrites it.\n\
         #\n\
         # The NATS users of the test harnesses and benchmarks: admin, gateway and sys as in a\n\
         # deployment (nats/callout.conf), and one static user per test principal with the\n\
         # permissions a deployment's auth callout would give it. PUBLIC passwords (<name>-dev):\n\
         # never use this file for anything reachable from other machines.\n\
         accounts {{\n  SEQUENT {{\n    jetstream: enabled\n    users: [\n{}\n    ]\n  }}\n  SYS {{\n    users: [{{ user: sys, password: {} }}]\n  }}\n}}\nsystem_account: SYS\n",
        users.join("\n"),
        password("sys"),
    )
}

fn quoted(subjects: &[String]) -> String {
    subjects.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checked-in file is what this module makes (the harnesses include the file: the
    /// Python one cannot call Rust).
    #[test]
    fn test_users_conf_is_up_to_date() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../nats/test-users.conf");
        let want = conf(&Layout::new("EVENTS", PARTITIONS));
        if std::env::var("SEQUENT_BLESS").is_ok_and(|v| v == "1") {
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(have == want, "{} is stale: run SEQUENT_BLESS=1 cargo test -p sequent-auth test_users", path.display());
    }

    #[test]
    fn every_test_principal_is_confined_to_its_inbox() {
        let text = conf(&Layout::new("EVENTS", PARTITIONS));
        for name in SERVICES.iter().chain(READERS) {
            assert!(text.contains(&format!("subscribe: {{ allow: [\"_INBOX_{name}.>\"] }}")), "{name}");
        }
        assert!(!text.contains("CONSUMER.CREATE"), "no test user creates consumers");
    }
}
