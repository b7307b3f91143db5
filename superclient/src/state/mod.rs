//! A service's state in Redis: the key layout ([`keys`]) and its migration from the layout
//! before hash tags ([`migrate`]), a call's buffered writes ([`overlay`]), one node or a
//! cluster ([`connection`]), the connection's atomic scripts ([`store`]), and the announcements that
//! wake `bus:wait` ([`notify`]); [`memory`], the state kept in memory for `superclient test`.

pub mod connection;
pub mod keys;
pub mod memory;
pub mod migrate;
pub mod notify;
pub mod overlay;
pub mod parked;
pub mod rebuilds;
pub mod store;

pub use keys::*;
pub use memory::Memory;
pub use overlay::{Cmd, Overlay, StrView};
pub use store::{Changes, Commit, Guard, Locks, Store};
