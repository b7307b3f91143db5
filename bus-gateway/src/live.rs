//! `GET /v1/live`: a WebSocket that sends the matching history from `from_seq`, then live
//! events. Both come from one ordered consumer, so the switch has no gap and no duplicate;
//! a `{"kind":"caught_up"}` message marks where history ended.

use crate::auth::{bearer, Role};
use crate::answers::{bad, denied};
use crate::store::ordered_config;
use crate::App;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures::StreamExt;
use sequent_protocol::envelope::event_json_with_seq;
use sequent_protocol::subjects;
use crate::openapi::{LiveMessage, PROBLEM};
use sequent_protocol::Problem;
use serde::Deserialize;
use std::sync::Arc;
use utoipa::IntoParams;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LiveQuery {
    /// Event types, comma separated (empty or absent: all).
    #[serde(default)]
    types: Option<String>,
    /// Keys, comma separated (empty or absent: all).
    #[serde(default)]
    keys: Option<String>,
    /// Start of the history to send first; without it only new events are sent.
    #[serde(default)]
    from_seq: Option<u64>,
    /// For browsers, which cannot set an Authorization header on a WebSocket.
    #[serde(default)]
    token: Option<String>,
}

fn list(s: &Option<String>) -> Vec<&str> {
    s.as_deref().map(|s| s.split(',').map(str::trim).filter(|x| !x.is_empty()).collect()).unwrap_or_default()
}

/// The live feed: a WebSocket of events.
///
/// Sends the matching history from `from_seq`, then `{"kind":"caught_up"}`, then live events as
/// they are stored, each as a text message (`LiveMessage`), with no gap and no duplicate at the
/// switch. Without `from_seq` only new events are sent. Browsers, which cannot set headers on a
/// WebSocket, pass the API token as `token`.
#[utoipa::path(
    get,
    path = "/v1/live",
    tag = "live",
    params(LiveQuery),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol; then one `LiveMessage` per text message"),
        (status = 400, description = "Not a WebSocket request, or a malformed type or key", body = Problem, content_type = PROBLEM),
        (status = 401, description = "No or an unknown API token", body = Problem, content_type = PROBLEM),
        (status = 403, description = "The request comes from a page of another origin", body = Problem, content_type = PROBLEM),
        (status = 426, description = "The connection cannot be upgraded", body = Problem, content_type = PROBLEM),
    ),
    security((), ("api_token" = []))
)]
pub async fn live(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<LiveQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    let token = bearer(&headers).or(q.token.as_deref());
    if crate::auth::foreign_origin(&headers) {
        return denied(crate::auth::Denied::Forbidden("a page of another origin may not open the live feed".into()));
    }
    if let Err(d) = app.caller(token, Role::Read) {
        return denied(d);
    }
    let filters = match subjects::read_filters(&list(&q.types), &list(&q.keys)) {
        Ok(f) => f,
        Err(e) => return bad(e),
    };
    let from_seq = q.from_seq;
    ws.on_upgrade(move |socket| async move {
        if let Err(e) = feed(app, socket, filters, from_seq).await {
            tracing::debug!(error = %e, "live feed ended");
        }
    })
}

async fn feed(app: Arc<App>, mut socket: WebSocket, filters: Vec<String>, from_seq: Option<u64>) -> anyhow::Result<()> {
    use async_nats::jetstream::consumer::DeliverPolicy;
    let mut config = ordered_config(filters, from_seq.unwrap_or(1));
    if from_seq.is_none() {
        config.deliver_policy = DeliverPolicy::New;
    }
    let consumer = app.store.events.create_consumer(config).await?;
    let mut caught_up = consumer.cached_info().num_pending == 0;
    let mut last_seq = 0u64;
    if caught_up {
        socket.send(Message::Text(caught_up_msg(last_seq).into())).await?;
    }
    let mut messages = consumer.messages().await?;
    loop {
        tokio::select! {
            next = messages.next() => {
                let Some(msg) = next else { break };
                let msg = msg?;
                let info = msg.info().map_err(|e| anyhow::anyhow!("{e}"))?;
                last_seq = info.stream_sequence;
                let pending = info.pending;
                let json = event_json_with_seq(&msg.payload, last_seq)?;
                socket.send(Message::Text(format!("{{\"kind\":\"event\",\"event\":{json}}}").into())).await?;
                if !caught_up && pending == 0 {
                    caught_up = true;
                    socket.send(Message::Text(caught_up_msg(last_seq).into())).await?;
                }
            }
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    Ok(())
}

fn caught_up_msg(seq: u64) -> String {
    serde_json::to_string(&LiveMessage::CaughtUp { seq }).expect("a live message serialises")
}
