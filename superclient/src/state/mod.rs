//! A service's state in Redis: the key layout ([`keys`]), a call's buffered writes
//! ([`overlay`]), the connection and its atomic scripts ([`store`]), and the announcements that
//! wake `bus:wait` ([`notify`]).

pub mod keys;
pub mod notify;
pub mod overlay;
pub mod parked;
pub mod store;

pub use keys::*;
pub use overlay::{Cmd, Overlay, StrView};
pub use store::{Changes, Commit, Guard, Store};
