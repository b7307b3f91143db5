//! NATS JWTs: a JSON header `{"typ":"JWT","alg":"ed25519-nkey"}` and claims, base64url without
//! padding, signed with an nkey (Ed25519). What nats-server sends and accepts in auth callout.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use nkeys::KeyPair;
use serde_json::{Map, Value};
use sha2::{Digest, Sha512_256};

const HEADER: &str = r#"{"typ":"JWT","alg":"ed25519-nkey"}"#;

#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("not a NATS JWT: {0}")]
    Malformed(String),
    #[error("the JWT's signature does not verify with its issuer {issuer}")]
    Signature { issuer: String },
    #[error("signing a JWT: {0}")]
    Signing(String),
}

/// Signs `claims` with `signer`, filling in `iss` (the signer's public key), `iat` (now) and
/// `jti` (a hash of the claims, as the NATS libraries make it).
pub fn encode(mut claims: Map<String, Value>, signer: &KeyPair) -> Result<String, JwtError> {
    claims.insert("iss".into(), signer.public_key().into());
    claims.insert("iat".into(), time::OffsetDateTime::now_utc().unix_timestamp().into());
    claims.insert("jti".into(), "".into());
    let hash = Sha512_256::digest(serde_json::to_vec(&claims).expect("claims are JSON"));
    claims.insert("jti".into(), data_encoding::BASE32_NOPAD.encode(&hash).into());
    let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(HEADER), URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("claims are JSON")));
    let signature = signer.sign(input.as_bytes()).map_err(|e| JwtError::Signing(e.to_string()))?;
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

/// The claims of `token`, after checking that its issuer (`iss`, a public nkey) signed it.
pub fn decode_verified(token: &str) -> Result<Map<String, Value>, JwtError> {
    let mut parts = token.trim().split('.');
    let (Some(header), Some(claims), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(JwtError::Malformed("three dot-separated parts expected".into()));
    };
    let part = |p: &str, what: &str| URL_SAFE_NO_PAD.decode(p.trim_end_matches('=')).map_err(|e| JwtError::Malformed(format!("{what}: {e}")));
    let header: Value = serde_json::from_slice(&part(header, "header")?).map_err(|e| JwtError::Malformed(format!("header: {e}")))?;
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or_default();
    if alg != "ed25519-nkey" && alg != "ed25519" {
        return Err(JwtError::Malformed(format!("algorithm {alg:?} (ed25519-nkey expected)")));
    }
    let claims: Map<String, Value> = serde_json::from_slice(&part(claims, "claims")?).map_err(|e| JwtError::Malformed(format!("claims: {e}")))?;
    let issuer = claims.get("iss").and_then(Value::as_str).ok_or_else(|| JwtError::Malformed("no issuer".into()))?.to_string();
    let key = KeyPair::from_public_key(&issuer).map_err(|e| JwtError::Malformed(format!("issuer {issuer:?}: {e}")))?;
    let signed = token.trim().rsplit_once('.').map_or("", |(signed, _)| signed);
    key.verify(signed.as_bytes(), &part(signature, "signature")?).map_err(|_| JwtError::Signature { issuer })?;
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_jwt_decodes_to_its_claims() {
        let key = KeyPair::new_account();
        let mut claims = Map::new();
        claims.insert("sub".into(), "UABC".into());
        claims.insert("nats".into(), serde_json::json!({ "type": "user", "version": 2 }));
        let token = encode(claims, &key).unwrap();
        let back = decode_verified(&token).unwrap();
        assert_eq!(back["sub"], "UABC");
        assert_eq!(back["iss"], key.public_key().as_str());
        assert_eq!(back["nats"]["type"], "user");
        assert_eq!(back["jti"].as_str().unwrap().len(), 52);
    }

    #[test]
    fn a_changed_claim_or_signature_is_refused() {
        let key = KeyPair::new_account();
        let token = encode(Map::new(), &key).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let mut forged: Map<String, Value> = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        forged.insert("sub".into(), "someone else".into());
        let tampered = format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap()), parts[2]);
        assert!(matches!(decode_verified(&tampered), Err(JwtError::Signature { .. })));
        // Signed by another key that claims to be the issuer.
        let other = KeyPair::new_account();
        let mut claims = Map::new();
        claims.insert("x".into(), 1.into());
        let theirs = encode(claims, &other).unwrap();
        let p2: Vec<&str> = theirs.split('.').collect();
        let spliced = format!("{}.{}.{}", parts[0], parts[1], p2[2]);
        assert!(matches!(decode_verified(&spliced), Err(JwtError::Signature { .. })));
        assert!(matches!(decode_verified("a.b"), Err(JwtError::Malformed(_))));
    }
}
