//! The event stream as a service sees it: appends go through the gateway ([`gateway`]); stored
//! events are read with JetStream direct reads ([`reads`]), never through consumers of the
//! service's own making.

pub mod gateway;
pub mod reads;

pub use gateway::{AppendError, Gateway};
pub use reads::{EventReader, ReadFailure};
