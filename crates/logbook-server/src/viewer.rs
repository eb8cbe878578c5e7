//! Viewer tokens: short-lived, read-only credentials for the embeddable audit-log viewer.
//!
//! A token is `lbv_` + base64url(`JSON claims ‖ MAC`), MAC being the first 16 bytes of SHA-256(secret ‖
//! claims) with a secret derived from the deployment's own. Claims: tenant, the pinned filter (a query string
//! of filters, possibly empty) and the expiry. Nothing is stored: a token is valid exactly while its MAC checks
//! and it has not expired. The server ANDs the pinned filter into every read made with the token, so no
//! request parameter can remove it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use logbook_core::time::Millis;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const PREFIX: &str = "lbv_";
const MAC_BYTES: usize = 16;

/// What a viewer token grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewerClaims {
    #[serde(rename = "t")]
    pub tenant: String,
    #[serde(rename = "f")]
    pub filter: String,
    #[serde(rename = "e")]
    pub expires_at: Millis,
    /// Makes two tokens issued in the same millisecond differ.
    #[serde(rename = "n")]
    pub nonce: u64,
}

/// The viewer-token secret derived from the deployment secret.
pub fn derive_secret(deployment_secret: &[u8]) -> Vec<u8> {
    Sha256::new()
        .chain_update(b"logbook viewer tokens\0")
        .chain_update(deployment_secret)
        .finalize()
        .to_vec()
}

fn mac(secret: &[u8], payload: &[u8]) -> [u8; MAC_BYTES] {
    let digest = Sha256::new()
        .chain_update(secret)
        .chain_update(payload)
        .finalize();
    let mut out = [0; MAC_BYTES];
    out.copy_from_slice(&digest[..MAC_BYTES]);
    out
}

pub fn issue(secret: &[u8], claims: &ViewerClaims) -> String {
    let payload = serde_json::to_vec(claims).expect("claims serialize");
    let mut bytes = payload.clone();
    bytes.extend_from_slice(&mac(secret, &payload));
    format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// Checks a token's MAC and expiry; the error is the reason, for the 401 message.
pub fn verify(secret: &[u8], token: &str, now: Millis) -> Result<ViewerClaims, &'static str> {
    let invalid = "invalid viewer token";
    let encoded = token.strip_prefix(PREFIX).ok_or(invalid)?;
    let bytes = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| invalid)?;
    if bytes.len() <= MAC_BYTES {
        return Err(invalid);
    }
    let (payload, received) = bytes.split_at(bytes.len() - MAC_BYTES);
    if mac(secret, payload) != received {
        return Err(invalid);
    }
    let claims: ViewerClaims = serde_json::from_slice(payload).map_err(|_| invalid)?;
    if now >= claims.expires_at {
        return Err("the viewer token has expired; ask for a new one");
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> ViewerClaims {
        ViewerClaims {
            tenant: "acme".into(),
            filter: "actor=u_1".into(),
            expires_at: 1_000,
            nonce: 7,
        }
    }

    #[test]
    fn valid_until_expiry() {
        let token = issue(b"secret", &claims());
        assert!(token.starts_with("lbv_"));
        assert_eq!(verify(b"secret", &token, 999), Ok(claims()));
        assert!(verify(b"secret", &token, 1_000)
            .unwrap_err()
            .contains("expired"));
    }

    #[test]
    fn tampering_and_other_secrets_are_refused() {
        let token = issue(b"secret", &claims());
        assert!(verify(b"other", &token, 0).is_err());
        let mut forged = claims();
        forged.filter = String::new();
        let forged_token = issue(b"guess", &forged);
        assert!(verify(b"secret", &forged_token, 0).is_err());
        let mut flipped = token.clone();
        let last = flipped.pop().unwrap();
        flipped.push(if last == 'A' { 'B' } else { 'A' });
        assert!(verify(b"secret", &flipped, 0).is_err());
        assert!(verify(b"secret", "lbv_", 0).is_err());
        assert!(verify(b"secret", "lbk_abc", 0).is_err());
    }
}
