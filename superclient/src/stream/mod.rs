//! The event stream as a service sees it: appends go through the gateway ([`gateway`]); stored
//! events are read with JetStream direct reads ([`reads`]), never through consumers of the
//! service's own making. [`memory`] is the stream kept in memory for `superclient test`.

pub mod gateway;
pub mod memory;
pub mod reads;

pub use gateway::{AppendError, Gateway};
pub use memory::MemoryLog;
pub use reads::{EventReader, ReadFailure};
