//! Services hosted by this process (`superclient a.lua b.lua ...`): each is still a service of
//! its own (its NATS user, consumers, Redis namespace, policy), but `http.call` reaches their
//! routes in process, without a socket, an HTTP parser or a hop through the network.

use parking_lot::RwLock;
use std::collections::HashMap;

#[derive(Default)]
pub struct Cohosted {
    routers: RwLock<HashMap<String, axum::Router>>,
}

impl Cohosted {
    pub fn register(&self, service: &str, router: axum::Router) {
        self.routers.write().insert(service.to_string(), router);
    }

    /// The router of `service` if this process runs it.
    pub fn get(&self, service: &str) -> Option<axum::Router> {
        self.routers.read().get(service).cloned()
    }
}
