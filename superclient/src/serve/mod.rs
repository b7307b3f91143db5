//! What a service serves: its script's HTTP routes, `/health` and `/ready` ([`router`],
//! [`ops`]), WebSockets and live listeners ([`sockets`]), static files ([`statics`]); and the
//! process's `/metrics` listener ([`ops::metrics_router`]).

pub mod ops;
pub mod router;
pub mod sockets;
pub mod statics;
