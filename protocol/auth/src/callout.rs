//! NATS auth callout: the server's signed question about a connecting client, and the signed
//! answer (a user JWT with the client's permissions, or a refusal).
//!
//! The server sends an authorization request JWT, signed by its own nkey, to
//! `$SYS.REQ.USER.AUTH` in the callout account; the answer is an authorization response JWT
//! signed by the configured issuer (an account nkey), addressed to that server, whose user JWT
//! names the request's user nkey and, in a server configured by file, the account to bind to.

use crate::jwt::{self, JwtError};
use crate::permissions::Permissions;
use nkeys::KeyPair;
use serde_json::{json, Map, Value};

/// The subject nats-server sends authorization requests to.
pub const SUBJECT: &str = "$SYS.REQ.USER.AUTH";

/// What the gateway needs from an authorization request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The asking server's public nkey (the answer is addressed to it).
    pub server: String,
    /// The nkey the user JWT must be issued to.
    pub user_nkey: String,
    /// The user name and password the client presented.
    pub user: String,
    pub password: String,
    /// The client's connection id on that server (to close it later, on revocation).
    pub client_id: u64,
    pub host: String,
}

/// Reads and verifies an authorization request: signed by the server it names.
pub fn parse_request(token: &str) -> Result<Request, JwtError> {
    let claims = jwt::decode_verified(token)?;
    let nats = claims.get("nats").and_then(Value::as_object).ok_or_else(|| JwtError::Malformed("no nats claims".into()))?;
    let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
    let server = s(nats.get("server_id").and_then(|v| v.get("id")));
    if server.is_empty() || Some(server.as_str()) != claims.get("iss").and_then(Value::as_str) {
        return Err(JwtError::Malformed("the request is not signed by the server it names".into()));
    }
    let opts = nats.get("connect_opts").or_else(|| nats.get("client_opts"));
    let client = nats.get("client_info");
    Ok(Request {
        server,
        user_nkey: s(nats.get("user_nkey")),
        user: s(opts.and_then(|o| o.get("user"))),
        password: s(opts.and_then(|o| o.get("pass"))),
        client_id: client.and_then(|c| c.get("id")).and_then(Value::as_u64).unwrap_or(0),
        host: s(client.and_then(|c| c.get("host"))),
    })
}

/// The answer admitting the client as `name` with `permissions`, bound to `account`.
pub fn admit(request: &Request, name: &str, account: &str, permissions: &Permissions, issuer: &KeyPair) -> Result<String, JwtError> {
    let mut user = Map::new();
    user.insert("sub".into(), request.user_nkey.clone().into());
    user.insert("aud".into(), account.into());
    user.insert("name".into(), name.into());
    user.insert("nats".into(), permissions.claims());
    let user_jwt = jwt::encode(user, issuer)?;
    respond(request, json!({ "jwt": user_jwt }), issuer)
}

/// The answer refusing the client, with the reason the server logs.
pub fn refuse(request: &Request, reason: &str, issuer: &KeyPair) -> Result<String, JwtError> {
    respond(request, json!({ "error": reason }), issuer)
}

fn respond(request: &Request, mut body: Value, issuer: &KeyPair) -> Result<String, JwtError> {
    body["type"] = "authorization_response".into();
    body["version"] = 2.into();
    let mut claims = Map::new();
    claims.insert("sub".into(), request.user_nkey.clone().into());
    claims.insert("aud".into(), request.server.clone().into());
    claims.insert("nats".into(), body);
    jwt::encode(claims, issuer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_from(server: &KeyPair, user: &str, pass: &str) -> String {
        let mut claims = Map::new();
        claims.insert("aud".into(), "nats-authorization-request".into());
        claims.insert("sub".into(), "nats_user_auth_request".into());
        claims.insert(
            "nats".into(),
            json!({
                "server_id": { "id": server.public_key(), "name": "n1" },
                "user_nkey": "UCALLER",
                "client_info": { "id": 42, "host": "127.0.0.1" },
                "connect_opts": { "user": user, "pass": pass },
                "type": "authorization_request", "version": 2,
            }),
        );
        jwt::encode(claims, server).unwrap()
    }

    #[test]
    fn a_request_is_read_and_answered_for_its_server_and_user() {
        let server = KeyPair::new_server();
        let issuer = KeyPair::new_account();
        let r = parse_request(&request_from(&server, "nectar", "pw")).unwrap();
        assert_eq!((r.user.as_str(), r.password.as_str(), r.client_id), ("nectar", "pw", 42));
        let perms = Permissions { publish: vec!["a".into()], subscribe: vec!["_INBOX_nectar.>".into()] };
        let answer = jwt::decode_verified(&admit(&r, "nectar", "SEQUENT", &perms, &issuer).unwrap()).unwrap();
        assert_eq!(answer["aud"], server.public_key().as_str());
        assert_eq!(answer["sub"], "UCALLER");
        assert_eq!(answer["iss"], issuer.public_key().as_str());
        let user = jwt::decode_verified(answer["nats"]["jwt"].as_str().unwrap()).unwrap();
        assert_eq!((user["sub"].as_str(), user["aud"].as_str(), user["name"].as_str()), (Some("UCALLER"), Some("SEQUENT"), Some("nectar")));
        assert_eq!(user["nats"]["pub"]["allow"][0], "a");
        let refusal = jwt::decode_verified(&refuse(&r, "unknown principal", &issuer).unwrap()).unwrap();
        assert_eq!(refusal["nats"]["error"], "unknown principal");
        assert!(refusal["nats"].get("jwt").is_none());
    }

    #[test]
    fn a_request_signed_by_another_key_than_its_server_is_refused() {
        let server = KeyPair::new_server();
        let token = request_from(&server, "x", "y");
        // Someone else signs a request naming that server.
        let other = KeyPair::new_server();
        let claims = jwt::decode_verified(&token).unwrap();
        let forged = jwt::encode(claims, &other).unwrap();
        assert!(parse_request(&forged).is_err());
    }
}
