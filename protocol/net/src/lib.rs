//! The I/O both of Sequent's binaries (and the test harness) need, kept out of the I/O-free
//! `sequent-protocol`:
//!
//! - [`serve`]: the HTTP server loop with a header-read timeout, a connection limit and TLS;
//! - [`urls`]: NATS server lists whose credentials never reach a log line;
//! - [`direct`]: JetStream direct reads (a subject's last message, a batch of messages after a
//!   sequence, the last message of many subjects) without creating consumers;
//! - [`consumers`]: what both read from a partition consumer's state.

pub mod consumers;
pub mod direct;
pub mod serve;

/// Development mode (`SEQUENT_DEV=1`, as the test harness runs): processes may fall back to the
/// public development secrets (the test users of nats/test-users.conf, fixed signing keys).
/// Outside it every process refuses to start without its secrets and names them.
pub fn dev_mode() -> bool {
    std::env::var("SEQUENT_DEV").is_ok_and(|v| v == "1" || v == "true")
}
pub mod tail;
pub mod urls;

pub use direct::{DirectReader, ReadError, Stored};
pub use tail::{Tail, TailMessage};
pub use urls::{nats_servers, redact_url};
