//! What a service serves: its script's HTTP routes, `/health` and `/ready` ([`router`],
//! [`ops`]), WebSockets and live listeners ([`sockets`]), static files ([`statics`]), the
//! problems and decoding they share ([`answers`]); and the process's `/metrics` listener
//! ([`ops::metrics_router`]).

pub mod answers;
pub mod ops;
pub mod router;
pub mod sockets;
pub mod statics;
