//! Where the instances of every service are: membership (heartbeats, the live set of this
//! service, partition ownership by rendezvous hashing) and the directory of all services.

pub mod directory;
pub mod membership;

pub use directory::Directory;
