//! Viewer tokens: short-lived, read-only credentials for the embeddable audit-log viewer.
//!
//! A token is `lbv_` + the claims sealed by [`logbook_core::signed`] with a secret derived from the
//! deployment's own. Claims: tenant, the pinned filter (a query string
//! of filters, possibly empty) and the expiry. Nothing is stored: a token is valid exactly while its MAC checks
//! and it has not expired. The server ANDs the pinned filter into every read made with the token, so no
//! request parameter can remove it.

use logbook_core::time::Millis;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const PREFIX: &str = "lbv_";

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

pub fn issue(secret: &[u8], claims: &ViewerClaims) -> String {
    let payload = serde_json::to_vec(claims).expect("claims serialize");
    format!("{PREFIX}{}", logbook_core::signed::seal(secret, &payload))
}

/// Checks a token's MAC and expiry; the error is the reason, for the 401 message.
pub fn verify(secret: &[u8], token: &str, now: Millis) -> Result<ViewerClaims, &'static str> {
    let invalid = "invalid viewer token";
    let sealed = token.strip_prefix(PREFIX).ok_or(invalid)?;
    let payload = logbook_core::signed::open(secret, sealed).ok_or(invalid)?;
    let claims: ViewerClaims = serde_json::from_slice(&payload).map_err(|_| invalid)?;
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
