//! What a script registered (its handlers, routes, declaration), kept in each state's app data,
//! and the slot through which the API functions reach the running call.

use super::{Call, StaticSpec};
use mlua::Function;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

pub(crate) type Slot = Arc<Mutex<Option<Call>>>;

/// The functions a state's script registered, stored in the state's app data.
#[derive(Default)]
pub(crate) struct Handlers {
    pub(crate) service: Option<String>,
    pub(crate) declaration: sequent_protocol::Declaration,
    pub(crate) listeners: HashMap<String, (Function, bool)>,
    pub(crate) rerun: std::collections::HashSet<String>,
    pub(crate) rebuild: HashMap<String, Function>,
    pub(crate) receipts: HashMap<String, Function>,
    pub(crate) routes: Vec<(String, String, Function)>,
    pub(crate) live: HashMap<String, Function>,
    pub(crate) live_topics: HashMap<String, super::live_topics::LiveTopics>,
    pub(crate) websockets: Vec<(String, Function)>,
    pub(crate) statics: Vec<StaticSpec>,
    /// See `Spec::original_statuses`.
    pub(crate) original_statuses: bool,
}
