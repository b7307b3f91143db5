//! Live delivery and its relatives: the partition workers ([`worker`]), the batch path of
//! events through the script ([`apply`]), poison events ([`parking`]), rebuilding the state
//! from the stream ([`rebuild`]), and asking the gateway for the consumers ([`provision`]).

pub mod apply;
pub mod parking;
pub mod provision;
pub mod rebuild;
pub mod worker;
