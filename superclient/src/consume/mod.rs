//! Live delivery and its relatives: the partition workers ([`worker`]), when they ack
//! ([`late_ack`]) and what they know of their partition ([`partition`]), the batch path of
//! events through the script ([`apply`]), poison events ([`parking`]), rebuilding the state
//! from the stream ([`rebuild`]) also when an operator asks ([`rebuild_requests`]), asking the gateway for the consumers ([`provision`]), and the
//! gauges operators graph: consumer lag and parked keys ([`lag`]).

pub mod apply;
pub mod lag;
pub mod late_ack;
pub mod parking;
pub mod partition;
pub mod provision;
pub mod rebuild;
pub mod rebuild_requests;
pub mod worker;
