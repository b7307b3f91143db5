//! Sequent's credential model, as rules without I/O.
//!
//! Every party that talks to NATS or the gateway's HTTP API is a **principal** with one
//! credential: its name and a random secret. Operators register principals in the registry (a
//! JetStream key-value bucket, [`principal::REGISTRY_BUCKET`]): a service with its
//! [declaration](sequent_protocol::Declaration), or a reader (an analyst). The registry keeps
//! a hash of the secret, never the secret.
//!
//! nats-server asks the gateway about every connection of a principal (NATS auth callout):
//! the gateway checks the secret against the registry and answers with a user JWT carrying the
//! permissions derived here ([`permissions`]) from the principal's kind and declaration. So a
//! new service joins a running deployment by being registered, and leaves it by being
//! unregistered (its connections are closed and refused from then on); nothing else is edited
//! and nothing restarts.
//!
//! What the permissions hold against someone with one principal's credential:
//! - nobody but the gateway creates, changes or deletes consumers: readers' live tails are push
//!   consumers the gateway makes for them, delivering only into the reader's own inbox;
//! - a service pulls, acks, unpins and resets only its own partition consumers, appends only as
//!   itself (`sequent.append.<name>`, which the gateway answers with the service's policy);
//! - every principal receives only on its own inbox prefix (`_INBOX_<name>.`), so nobody reads
//!   another's replies.

pub mod callout;
pub mod jwt;
pub mod permissions;
pub mod principal;
pub mod test_users;

pub use permissions::{Layout, Permissions};
pub use nkeys::KeyPair;
pub use principal::{Credential, Kind, Principal};
