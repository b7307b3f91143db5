//! OpenAPI schemas (feature `openapi`) of the types whose JSON a derive cannot describe: the
//! `expect` of an event (a number or a word) and the problem details of HTTP errors.

use crate::envelope::Expect;
use crate::problem::{Problem, TYPE_PREFIX};
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::{KnownFormat, RefOr};

impl utoipa::PartialSchema for Expect {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .description(Some(
                "The version the event will get, i.e. how many events its key holds now: a number, \
                 \"new\" (the key has no events: same as 0) or \"any\" (no check).",
            ))
            .item(ObjectBuilder::new().schema_type(Type::Integer).format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64))).minimum(Some(0)))
            .item(ObjectBuilder::new().schema_type(Type::String).enum_values(Some(["new", "any"])))
            .into()
    }
}

impl utoipa::ToSchema for Expect {}

/// The members of every problem (RFC 9457 and `code`), as an object builder callers may extend
/// with extension members.
pub fn problem_object() -> ObjectBuilder {
    let string = |description: &str| ObjectBuilder::new().schema_type(Type::String).description(Some(description));
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property(
            "type",
            string(&format!("The problem type, a URI: `{TYPE_PREFIX}` and the code's slug."))
                .format(Some(SchemaFormat::Custom("uri".into())))
                .pattern(Some(format!("^{TYPE_PREFIX}[a-z0-9-]+$"))),
        )
        .property("title", string("Short summary of the problem type (the same for every occurrence of a code)."))
        .property(
            "status",
            ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(400)).maximum(Some(599)).description(Some("The HTTP status.")),
        )
        .property("detail", string("What went wrong and what to do about it, for a person."))
        .property("instance", string("Identifies this occurrence, e.g. `urn:uuid:<error id>` of a logged failure."))
        .property("code", string("The machine-readable reason clients match on."))
        .required("type")
        .required("title")
        .required("status")
        .required("detail")
        .required("code")
}

impl utoipa::PartialSchema for Problem {
    fn schema() -> RefOr<Schema> {
        problem_object()
            .description(Some(
                "An RFC 9457 problem details object (`application/problem+json`) with the \
                 machine-readable `code` extension.",
            ))
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
            .into()
    }
}

impl utoipa::ToSchema for Problem {}
