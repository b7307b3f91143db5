//! The shared vocabulary of Sequent: the event envelope, the validation rules for keys, types
//! and ids, the NATS subject layout, and the append wire messages. No I/O lives here, so both
//! binaries (and the Python module) agree on every byte without pulling in a runtime.

pub mod declaration;
pub mod duration;
pub mod envelope;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod problem;
pub mod redaction;
pub mod subjects;
pub mod validate;
pub mod wire;

pub use declaration::Declaration;
pub use envelope::{Event, Expect, NewEvent, Producer};
pub use problem::Problem;
pub use redaction::Redaction;
pub use validate::{Limits, ValidationError};
pub use wire::{AppendReply, AppendRequest, ErrorBody, ErrorCode, ProvisionReply, ProvisionRequest, Receipt, TailReply, TailRequest, TailStart, TailStream};
