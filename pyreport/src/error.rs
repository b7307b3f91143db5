//! Errors, each naming what went wrong and what to check. They become the Python exception
//! classes of `pyreport.errors` (defined in Python so that they can also be `ConnectionError`,
//! `PermissionError`, ... for callers that catch the built-in kinds).

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server could not be reached (refused, timed out, bad URL, TLS).
    #[error("{0}")]
    Connection(String),
    /// The server refused the user name or password.
    #[error("{0}")]
    Auth(String),
    /// The events stream does not exist.
    #[error("{0}")]
    StreamMissing(String),
    /// The user may not do something pyreport needs.
    #[error("{0}")]
    Permission(String),
    /// Any other failure talking to NATS / JetStream.
    #[error("{0}")]
    Nats(String),
    /// A local cache that cannot be read or written.
    #[error("{0}")]
    Cache(String),
    /// A bad argument detected on the Rust side.
    #[error("{0}")]
    BadArgument(String),
    /// A Python exception raised by a callback, or KeyboardInterrupt.
    #[error("{0}")]
    Python(PyErr),
}

pub type Result<T> = std::result::Result<T, Error>;

impl From<PyErr> for Error {
    fn from(e: PyErr) -> Self {
        Error::Python(e)
    }
}

impl Error {
    fn class_name(&self) -> &'static str {
        match self {
            Error::Connection(_) => "ConnectionFailed",
            Error::Auth(_) => "AuthFailed",
            Error::StreamMissing(_) => "StreamMissing",
            Error::Permission(_) => "PermissionDenied",
            Error::Nats(_) => "NatsError",
            Error::Cache(_) => "CacheError",
            Error::BadArgument(_) | Error::Python(_) => "",
        }
    }

    pub fn into_pyerr(self, py: Python<'_>) -> PyErr {
        let message = match self {
            Error::Python(e) => return e,
            Error::BadArgument(m) => return PyValueError::new_err(m),
            ref other => other.to_string(),
        };
        let name = self.class_name();
        let class = py.import("pyreport.errors").and_then(|m| m.getattr(name));
        match class.and_then(|c| c.call1((message.clone(),))) {
            Ok(instance) => PyErr::from_value(instance),
            Err(_) => PyRuntimeError::new_err(message),
        }
    }
}

impl From<Error> for PyErr {
    fn from(e: Error) -> PyErr {
        Python::attach(|py| e.into_pyerr(py))
    }
}
