//! Errors as a kind plus a message and the error that caused it (the shape of async-nats's
//! `error.rs`): callers decide on the kind (retry, park, answer 503), operators read the chain.

use std::fmt;

pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error of kind `K`: what went wrong, in words, and what caused it.
pub struct Error<K> {
    kind: K,
    message: String,
    source: Option<BoxError>,
}

impl<K: Copy> Error<K> {
    pub fn new(kind: K, message: impl Into<String>) -> Self {
        Error { kind, message: message.into(), source: None }
    }

    /// The same error, caused by `source`.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    pub fn kind(&self) -> K {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl<K> fmt::Display for Error<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(source) if !self.message.is_empty() => write!(f, "{}: {source}", self.message),
            Some(source) => write!(f, "{source}"),
            None => f.write_str(&self.message),
        }
    }
}

impl<K: fmt::Debug> fmt::Debug for Error<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error").field("kind", &self.kind).field("message", &self.message).field("source", &self.source).finish()
    }
}

impl<K: fmt::Debug> std::error::Error for Error<K> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|s| s.as_ref() as &(dyn std::error::Error + 'static))
    }
}

/// Why an event (or a route) could not be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The script failed: counts towards parking.
    Script,
    /// Redis, NATS or the gateway failed: retried without counting.
    Infra,
}

pub type Failure = Error<FailureKind>;

impl Failure {
    pub fn script(message: impl Into<String>) -> Failure {
        Error::new(FailureKind::Script, message)
    }
    pub fn infra(message: impl Into<String>) -> Failure {
        Error::new(FailureKind::Infra, message)
    }
    pub fn is_script(&self) -> bool {
        self.kind == FailureKind::Script
    }
}

/// Redis errors on commit: a refusal of the script's writes (wrong type, not an integer) is
/// the script's fault; anything else is the connection's.
pub fn redis_failure(e: redis::RedisError) -> Failure {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_unrecoverable_error() {
        Failure::infra("Redis").with_source(e)
    } else {
        Failure::script("Redis refused the handler's writes").with_source(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_its_source() {
        let io = std::io::Error::other("connection reset");
        let e = Failure::infra("Redis").with_source(io);
        assert_eq!(e.kind(), FailureKind::Infra);
        assert_eq!(e.to_string(), "Redis: connection reset");
        assert!(std::error::Error::source(&e).is_some());
        assert_eq!(Failure::script("boom").to_string(), "boom");
    }
}
