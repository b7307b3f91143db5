//! Live delivery and its relatives: the partition workers ([`worker`]) and what they know of
//! their partition ([`partition`]), the batch path of
//! events through the script ([`apply`]), poison events ([`parking`]), rebuilding the state
//! from the stream ([`rebuild`]), and asking the gateway for the consumers ([`provision`]).

pub mod apply;
pub mod parking;
pub mod partition;
pub mod provision;
pub mod rebuild;
pub mod worker;
