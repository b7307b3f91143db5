//! The WebSocket topics of this instance: which sockets listen to which topics, and the
//! pushes and joins that calls asked for (`bus:push`, `bus:join`), applied once the call is
//! done. A socket that cannot keep up (its queue of 256 messages is full) is dropped.

use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use tokio::sync::mpsc;

const QUEUE: usize = 256;

/// What a call asked of this instance's WebSockets.
#[derive(Debug, Clone)]
pub enum HubOp {
    /// Send `message` (JSON text) once to every socket subscribed to one of `topics`.
    Push { topics: Vec<String>, message: String },
    /// Sockets subscribed to `topic` also subscribe to `new_topic`.
    Join { topic: String, new_topic: String },
}

#[derive(Default)]
pub struct Hub {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next: u64,
    sockets: HashMap<u64, Sock>,
    topics: HashMap<String, HashSet<u64>>,
}

struct Sock {
    tx: mpsc::Sender<String>,
    topics: HashSet<String>,
}

impl Inner {
    fn remove(&mut self, id: u64) {
        if let Some(sock) = self.sockets.remove(&id) {
            for t in sock.topics {
                if let Some(set) = self.topics.get_mut(&t) {
                    set.remove(&id);
                    if set.is_empty() {
                        self.topics.remove(&t);
                    }
                }
            }
        }
    }
}

impl Hub {
    pub fn register(&self, topics: Vec<String>) -> (u64, mpsc::Receiver<String>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut inner = self.inner.lock();
        inner.next += 1;
        let id = inner.next;
        for t in &topics {
            inner.topics.entry(t.clone()).or_default().insert(id);
        }
        inner.sockets.insert(id, Sock { tx, topics: topics.into_iter().collect() });
        metrics::gauge!("sequent_websockets").set(inner.sockets.len() as f64);
        (id, rx)
    }

    /// Whether a socket of this instance listens to any of `topics`.
    pub fn listens_to_any(&self, topics: &[String]) -> bool {
        let inner = self.inner.lock();
        topics.iter().any(|t| inner.topics.contains_key(t))
    }

    pub fn unregister(&self, id: u64) {
        let mut inner = self.inner.lock();
        inner.remove(id);
        metrics::gauge!("sequent_websockets").set(inner.sockets.len() as f64);
    }

    pub fn apply(&self, ops: Vec<HubOp>) {
        if ops.is_empty() {
            return;
        }
        let mut inner = self.inner.lock();
        for op in ops {
            match op {
                HubOp::Push { topics, message } => {
                    let mut ids: Vec<u64> = topics.iter().filter_map(|t| inner.topics.get(t)).flatten().copied().collect();
                    ids.sort_unstable();
                    ids.dedup();
                    let mut dead = Vec::new();
                    for id in ids {
                        if let Some(sock) = inner.sockets.get(&id) {
                            if sock.tx.try_send(message.clone()).is_err() {
                                // Full (too slow) or closed: dropping the sender ends the socket.
                                dead.push(id);
                            }
                        }
                    }
                    for id in dead {
                        inner.remove(id);
                    }
                }
                HubOp::Join { topic, new_topic } => {
                    let ids: Vec<u64> = inner.topics.get(&topic).map(|s| s.iter().copied().collect()).unwrap_or_default();
                    for id in ids {
                        if let Some(sock) = inner.sockets.get_mut(&id) {
                            sock.topics.insert(new_topic.clone());
                        }
                        inner.topics.entry(new_topic.clone()).or_default().insert(id);
                    }
                }
            }
        }
        metrics::gauge!("sequent_websockets").set(inner.sockets.len() as f64);
    }
}

