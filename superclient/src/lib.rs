//! The superclient: runs Sequent services written in Lua, with sticky per-key event delivery
//! from JetStream, effectively-once Redis effects, parking of poison events, state rebuilds and
//! HTTP routes. `main.rs` parses the command line and calls [`app`].
//!
//! Modules, each depending only on those listed after it:
//!
//! - [`app`]: the commands, wired together;
//! - [`authoring`]: writing services without servers: `superclient new` and `superclient test`;
//! - [`consume`]: partition workers, the batch path of events through the script, parking,
//!   rebuilds, consumer provisioning;
//! - [`serve`]: the HTTP routes, WebSockets, live listeners and static files;
//! - [`runtime`]: one running service (its pools, connections, settings);
//! - [`script`]: the Lua runtime and the API scripts see;
//! - [`cluster`]: membership, partition ownership and the directory of all services;
//! - [`state`]: Redis: key layout, the write overlay, atomic commits, commit announcements;
//! - [`stream`]: appends through the gateway, direct reads of stored events;
//! - [`hub`], [`cohost`], [`error`], [`cli`]: small pieces the others share.

pub mod app;
pub mod authoring;
pub mod cli;
pub mod cluster;
pub mod cohost;
pub mod consume;
pub mod error;
pub mod hub;
pub mod registration;
pub mod runtime;
pub mod script;
pub mod serve;
pub mod state;
pub mod stream;
