//! What the gateway and the superclient both read from a partition consumer's state.

use async_nats::jetstream::consumer::Info;
use async_nats::jetstream::context::{ConsumerInfoError, ConsumerInfoErrorKind};
use sequent_protocol::subjects::MADE_AGAIN_BELOW;

/// Whether reading a consumer failed because it does not exist (as opposed to a timeout or an
/// unreachable server). Takes the error as `get_consumer` boxes it, or as `consumer_info` gives it.
pub fn missing(error: &(dyn std::error::Error + 'static)) -> bool {
    error.downcast_ref::<ConsumerInfoError>().is_some_and(|e| e.kind() == ConsumerInfoErrorKind::NotFound)
}

/// Whether live delivery has run on this consumer: it delivered something, or it was made again
/// after its recorded ack floor (bus-gateway's floors.rs), which is then where delivery stood.
pub fn has_run(info: &Info) -> bool {
    info.delivered.stream_sequence > 0 || info.config.metadata.contains_key(MADE_AGAIN_BELOW)
}
