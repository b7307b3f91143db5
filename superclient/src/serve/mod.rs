//! What a service serves: its script's HTTP routes, `/health` and `/metrics` ([`router`]),
//! WebSockets and live listeners ([`sockets`]), static files ([`statics`]), and the problems
//! and decoding they share ([`answers`]).

pub mod answers;
pub mod router;
pub mod sockets;
pub mod statics;
