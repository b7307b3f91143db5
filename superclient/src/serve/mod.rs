//! What a service serves: its script's HTTP routes, `/health` and `/metrics` ([`router`]),
//! WebSockets and live listeners ([`sockets`]), and static files ([`statics`]).

pub mod router;
pub mod sockets;
pub mod statics;
