//! Real answers checked against an OpenAPI 3.1 document: the status is one the operation
//! documents (or its `default`), the content type one it lists, and the body valid against the
//! schema (JSON Schema 2020-12, with the `jsonschema` crate). The document is read strictly: an
//! object schema that names its properties and says nothing of others allows no others, so a
//! field added to an answer without its description fails too.
//!
//! The contract also counts what it saw: [`Contract::assert_covered`] fails when a documented
//! answer was never exercised (unless the test says why it cannot be).
#![allow(dead_code)]

use serde_json::{json, Map, Value};
use std::collections::BTreeSet;
use std::sync::Mutex;

pub struct Contract {
    name: String,
    spec: Value,
    /// `components.schemas`, strict and with references rewritten to `#/$defs/...`.
    defs: Value,
    seen: Mutex<BTreeSet<(String, String, String)>>,
}

/// One answer, as read and checked.
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub headers: reqwest::header::HeaderMap,
    /// The body parsed as JSON (a string when it is not JSON, null when empty).
    pub body: Value,
}

impl Contract {
    pub fn new(name: &str, spec: Value) -> Contract {
        let version = spec["openapi"].as_str().unwrap_or_default();
        assert!(version.starts_with("3.1."), "{name}: an OpenAPI 3.1 document, got openapi = {version:?}");
        let mut defs = spec["components"]["schemas"].clone();
        assert!(defs.is_object(), "{name}: the document has components.schemas");
        strict(&mut defs);
        rewrite_refs(&mut defs);
        Contract { name: name.to_string(), spec, defs, seen: Mutex::new(BTreeSet::new()) }
    }

    pub fn spec(&self) -> &Value {
        &self.spec
    }

    fn resolve<'a>(&'a self, v: &'a Value) -> &'a Value {
        match v["$ref"].as_str() {
            Some(r) => self.spec.pointer(r.trim_start_matches('#')).unwrap_or_else(|| panic!("{}: dangling $ref {r}", self.name)),
            None => v,
        }
    }

    fn operation(&self, method: &str, template: &str) -> &Value {
        let op = &self.spec["paths"][template][method.to_ascii_lowercase()];
        assert!(op.is_object(), "{}: {method} {template} is not an operation of the document", self.name);
        op
    }

    /// A validator of `schema` (a schema of the document, refs to components allowed).
    fn validator(&self, schema: &Value) -> jsonschema::Validator {
        let mut root = schema.clone();
        strict(&mut root);
        rewrite_refs(&mut root);
        let mut root = match root {
            Value::Object(m) => m,
            other => Map::from_iter([("allOf".to_string(), json!([other]))]),
        };
        root.insert("$defs".into(), self.defs.clone());
        jsonschema::draft202012::new(&Value::Object(root)).unwrap_or_else(|e| panic!("{}: the schema does not compile: {e}", self.name))
    }

    fn validate(&self, schema: &Value, value: &Value, what: &str) {
        let validator = self.validator(schema);
        let errors: Vec<String> = validator.iter_errors(value).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        assert!(errors.is_empty(), "{}: {what} does not match the document:\n  {}\n  value: {value}", self.name, errors.join("\n  "));
    }

    /// Checks one answer of `method template`; returns the key of the response it matched.
    pub fn check(&self, method: &str, template: &str, answer: &Answer) {
        let op = self.operation(method, template);
        let status = answer.status.to_string();
        let key = if op["responses"][&status].is_object() { status.clone() } else { "default".to_string() };
        let response = &op["responses"][&key];
        assert!(
            response.is_object(),
            "{}: {method} {template} answered {status}, which it does not document: {}",
            self.name,
            answer.body
        );
        let response = self.resolve(response);
        let what = format!("{method} {template} → {status} ({})", answer.content_type);
        match response.get("content").and_then(Value::as_object) {
            None => assert!(answer.body.is_null(), "{}: {what} has a body, the document says none: {}", self.name, answer.body),
            Some(content) => {
                let media = answer.content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
                let listed = content.get(&media).unwrap_or_else(|| {
                    panic!("{}: {what} is sent as {media:?}; the document lists {:?}: {}", self.name, content.keys().collect::<Vec<_>>(), answer.body)
                });
                if let Some(schema) = listed.get("schema") {
                    self.validate(schema, &answer.body, &what);
                }
            }
        }
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).insert((method.to_ascii_uppercase(), template.to_string(), key));
    }

    /// Sends `request`, checks the answer as one of `method template`, returns it.
    pub async fn send(&self, method: &str, template: &str, request: reqwest::RequestBuilder) -> Answer {
        let answer = read(request).await;
        self.check(method, template, &answer);
        answer
    }

    /// Checks a request body against the operation's `requestBody` (for bodies meant to be valid).
    pub fn check_request(&self, method: &str, template: &str, body: &Value) {
        let op = self.operation(method, template);
        let request = self.resolve(&op["requestBody"]);
        let schema = &request["content"]["application/json"]["schema"];
        assert!(schema.is_object(), "{}: {method} {template} takes no JSON body", self.name);
        self.validate(schema, body, &format!("the body of {method} {template}"));
    }

    /// Checks a value against a component schema (`LiveMessage`, ...).
    pub fn check_schema(&self, name: &str, value: &Value) {
        assert!(self.spec["components"]["schemas"][name].is_object(), "{}: no schema {name}", self.name);
        self.validate(&json!({ "$ref": format!("#/components/schemas/{name}") }), value, name);
    }

    /// Checks an answer of a path the document does not describe (an unknown path): a problem.
    pub fn check_problem(&self, answer: &Answer) {
        assert!(answer.status >= 400, "{}: expected an error, got {}", self.name, answer.status);
        assert_eq!(answer.content_type.split(';').next().unwrap().trim(), "application/problem+json", "{}: {}", self.name, answer.body);
        self.check_schema("Problem", &answer.body);
        assert_eq!(answer.body["status"], answer.status, "{}: status member = HTTP status", self.name);
    }

    /// Every documented answer (`METHOD template status`) was seen, but those `excused` (a
    /// pattern where `*` stands for any method, path or status, and why it cannot be provoked
    /// here).
    pub fn assert_covered(&self, excused: &[(&str, &str)]) {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let mut missing = Vec::new();
        for (template, item) in self.spec["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for key in op["responses"].as_object().into_iter().flat_map(|r| r.keys()) {
                    let id = format!("{} {template} {key}", method.to_ascii_uppercase());
                    let known = seen.contains(&(method.to_ascii_uppercase(), template.clone(), key.clone()));
                    if !known && !excused.iter().any(|(pattern, _)| matches_pattern(pattern, &id)) {
                        missing.push(id);
                    }
                }
            }
        }
        assert!(missing.is_empty(), "{}: documented answers no test exercised:\n  {}", self.name, missing.join("\n  "));
    }
}

/// `"* * 503"` matches every operation's 503; `"GET /v1/live 426"` one answer exactly.
fn matches_pattern(pattern: &str, id: &str) -> bool {
    let p: Vec<&str> = pattern.split(' ').collect();
    let i: Vec<&str> = id.split(' ').collect();
    p.len() == 3 && i.len() == 3 && p.iter().zip(&i).all(|(p, i)| *p == "*" || p == i)
}

/// Reads an answer: status, content type, JSON body.
pub async fn read(request: reqwest::RequestBuilder) -> Answer {
    let r = request.send().await.expect("the server answers");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let content_type = headers.get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let text = r.text().await.expect("a body");
    let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    Answer { status, content_type, headers, body }
}

/// Object schemas with `properties` and no word on others allow no others.
fn strict(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if m.contains_key("properties") && !m.contains_key("additionalProperties") {
                m.insert("additionalProperties".into(), Value::Bool(false));
            }
            for (k, child) in m.iter_mut() {
                // `properties` maps names to schemas; `example(s)` and `default` are values.
                if k != "example" && k != "examples" && k != "default" && k != "const" && k != "enum" {
                    strict(child);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(strict),
        _ => {}
    }
}

fn rewrite_refs(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get_mut("$ref") {
                if let Some(name) = r.strip_prefix("#/components/schemas/") {
                    *r = format!("#/$defs/{name}");
                }
            }
            m.values_mut().for_each(rewrite_refs);
        }
        Value::Array(a) => a.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}
