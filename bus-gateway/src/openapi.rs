//! The gateway's OpenAPI 3.1 document: the operations come from the handlers' `#[utoipa::path]`
//! annotations (collected by the router itself, so a route cannot exist without its
//! description), the schemas from the protocol types and the answer types below. Served at
//! `/v1/openapi.json`, browsable at `/v1/docs` (Swagger UI, vendored in the binary).

use sequent_protocol::openapi::problem_object;
use sequent_protocol::{Event, Expect, NewEvent, Problem, Producer, Receipt};
use serde::Serialize;
use utoipa::openapi::schema::{AdditionalProperties, ArrayBuilder, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{OpenApi, PartialSchema, ToSchema};

/// The content type of every error answer.
pub const PROBLEM: &str = sequent_protocol::problem::CONTENT_TYPE;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Sequent bus-gateway",
        description = "Validated, version-checked appends to the JetStream event stream, queries by key, \
            type and correlation, and a live WebSocket feed. Every error answer is an RFC 9457 problem \
            (`application/problem+json`) with a machine-readable `code`. With API tokens configured \
            (`SEQUENT_API_TOKENS`) every call but `/health`, `/ready` and this description needs \
            `Authorization: Bearer <token>`; without them the API is open on loopback only.",
        license(name = "Apache-2.0")
    ),
    tags(
        (name = "events", description = "Appending events"),
        (name = "queries", description = "Reading events back: by key, by type, by correlation"),
        (name = "live", description = "The live feed (WebSocket)"),
        (name = "operations", description = "Liveness and readiness (Prometheus metrics are served on a listener of their own: --metrics-listen)")
    ),
    components(schemas(Problem, AppendProblem, Appended, Receipt, NewEvent, Expect, Event, Producer, EventPage, Events, KeyHead, Sensitive, Health, Ready, NotReady, LiveMessage)),
    modifiers(&ApiToken)
)]
pub struct ApiDoc;

/// The bearer token scheme of `SEQUENT_API_TOKENS`.
struct ApiToken;

impl utoipa::Modify for ApiToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A token of SEQUENT_API_TOKENS (`name:token:role`, role `read` or `write`)"))
                    .build(),
            ),
        );
    }
}

/// A refused append: a problem whose `receipts` say, event by event, what happened (nothing of
/// the request was stored). Present for `conflict` (409) and invalid events (400); absent when
/// the body was not an append request at all.
pub struct AppendProblem;

impl PartialSchema for AppendProblem {
    fn schema() -> RefOr<Schema> {
        problem_object()
            .description(Some(
                "An RFC 9457 problem with the receipts of the refused append: one per submitted event, in order \
                 (`conflict`, `invalid` or `aborted`).",
            ))
            .property("receipts", ArrayBuilder::new().items(Ref::from_schema_name("Receipt")))
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
            .into()
    }
}

impl ToSchema for AppendProblem {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((Receipt::name().into(), Receipt::schema()));
        <Receipt as ToSchema>::schemas(schemas);
    }
}

/// A gateway that is not ready (`/ready`): a problem whose `checks` say, check by check, what
/// was found (`{"ok": false, "detail": "NATS is not connected (disconnected)"}`).
pub struct NotReady;

impl PartialSchema for NotReady {
    fn schema() -> RefOr<Schema> {
        let check = ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("ok", ObjectBuilder::new().schema_type(Type::Boolean))
            .property("detail", ObjectBuilder::new().schema_type(SchemaType::AnyValue).description(Some("What was found: a word, a number or an object")))
            .required("ok")
            .required("detail")
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        problem_object()
            .description(Some("An RFC 9457 problem naming the checks that failed (`code` `not_ready`)."))
            .property(
                "checks",
                ObjectBuilder::new()
                    .schema_type(Type::Object)
                    .description(Some("Every check by name: `stopping`, `nats`, `events_stream`, `index_stream`"))
                    .additional_properties(Some(AdditionalProperties::RefOr(check.into()))),
            )
            .property("checked_in_ms", ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0)))
            .required("checks")
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
            .into()
    }
}

impl ToSchema for NotReady {}

/// A stored append: one `stored` receipt per event, in the order they were sent.
#[derive(Debug, Serialize, ToSchema)]
pub struct Appended {
    pub receipts: Vec<Receipt>,
}

/// One page of events in stream order. `next_from_seq` is where the next page starts (pass it
/// as `from_seq`), null at the end.
#[allow(dead_code)] // Describes the JSON `page` splices from stored payloads; the contract test holds them together.
#[derive(Serialize, ToSchema)]
pub struct EventPage {
    pub events: Vec<Event>,
    pub next_from_seq: Option<u64>,
}

/// The events of one correlation, in stream order.
#[allow(dead_code)] // Spliced from stored payloads too.
#[derive(Serialize, ToSchema)]
pub struct Events {
    pub events: Vec<Event>,
}

/// Where a key's version chain stands. All but `key` and `next_version` are null for a key
/// without events.
#[derive(Serialize, ToSchema)]
pub struct KeyHead {
    pub key: String,
    /// The version of the key's last event.
    pub current_version: Option<u64>,
    /// What the next append of this key must expect.
    pub next_version: u64,
    /// The stream sequence of the key's last event.
    pub last_seq: Option<u64>,
    pub last_event_id: Option<String>,
}

/// The data fields readers must not see: every registered service declaration's `sensitive`
/// fields (or the `--policy` file's), merged.
#[derive(Serialize, ToSchema)]
pub struct Sensitive {
    /// Event type → field names; `*` names fields of every type.
    #[schema(example = json!({"UserRegistered": ["password_hash"]}))]
    pub sensitive: std::collections::BTreeMap<String, Vec<String>>,
}

/// NATS answers and the stream is readable.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always "ok" (an unhealthy gateway answers 503 with a problem).
    pub status: String,
    pub stream: String,
    /// The stream's last sequence.
    pub last_seq: u64,
    pub checked_in_ms: u64,
}

/// Ready for traffic (`/ready`): NATS connected, the streams answer, not stopping.
#[derive(Serialize, ToSchema)]
pub struct Ready {
    /// Always "ready" (a gateway that is not answers 503 with a problem whose `checks` say why).
    pub status: String,
    /// The events stream.
    pub stream: String,
    /// The events stream's last sequence.
    pub last_seq: u64,
    /// The streams that answered (events, correlation index).
    pub streams: Vec<String>,
    pub checked_in_ms: u64,
}

/// One text message of `/v1/live`: the matching history from `from_seq`, then one
/// `caught_up` (where history ended; `seq` 0 when there was none), then live events.
#[allow(dead_code)] // Event messages are spliced from stored payloads.
#[derive(Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LiveMessage {
    Event { event: Box<Event> },
    CaughtUp { seq: u64 },
}
