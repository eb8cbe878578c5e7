//! The opaque pagination cursor of `GET /v1/events`.
//!
//! A cursor is the position of the last event of a page — `(created_at, seq)` in the listing's order — plus
//! what makes the next page well defined: the tenant, the order, the `now` that resolved relative times on the
//! first page, and a fingerprint of the defining query parameters. It is encoded as base64url of
//! `JSON payload ‖ MAC`, where MAC is the first 16 bytes of SHA-256(secret ‖ payload) with a per-deployment
//! secret; a forged or altered cursor is rejected as `invalid_cursor`.
//!
//! Pages continue strictly after the position, so an event is never repeated; events are never removed and
//! the order is total, so none is skipped. Events that arrive during paging appear only if they sort after the
//! position.

use crate::error::{Error, Result};
use crate::filter::query_string::Order;
use crate::time::Millis;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const MAC_BYTES: usize = 16;

/// A decoded cursor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    #[serde(rename = "t")]
    pub tenant: String,
    #[serde(rename = "o")]
    pub descending: bool,
    #[serde(rename = "c")]
    pub created_at: Millis,
    #[serde(rename = "s")]
    pub seq: u64,
    #[serde(rename = "n")]
    pub now: Millis,
    #[serde(rename = "f")]
    pub fingerprint: String,
}

impl Cursor {
    pub fn order(&self) -> Order {
        if self.descending {
            Order::Desc
        } else {
            Order::Asc
        }
    }

    pub fn encode(&self, secret: &[u8]) -> String {
        let payload = serde_json::to_vec(self).expect("a cursor always serializes");
        let mut bytes = payload.clone();
        bytes.extend_from_slice(&mac(secret, &payload));
        URL_SAFE_NO_PAD.encode(bytes)
    }

    pub fn decode(text: &str, secret: &[u8]) -> Result<Cursor> {
        let invalid = || {
            Error::InvalidCursor("the cursor is malformed or was altered; pass the `next_cursor` of the previous page unchanged".into())
        };
        let bytes = URL_SAFE_NO_PAD.decode(text.trim()).map_err(|_| invalid())?;
        if bytes.len() <= MAC_BYTES {
            return Err(invalid());
        }
        let (payload, received_mac) = bytes.split_at(bytes.len() - MAC_BYTES);
        if mac(secret, payload) != received_mac {
            return Err(invalid());
        }
        serde_json::from_slice(payload).map_err(|_| invalid())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Cursor {
        Cursor {
            tenant: "acme".into(),
            descending: true,
            created_at: 5,
            seq: 9,
            now: 10,
            fingerprint: "ab".into(),
        }
    }

    #[test]
    fn round_trips() {
        let text = sample().encode(b"secret");
        assert_eq!(Cursor::decode(&text, b"secret").unwrap(), sample());
    }

    #[test]
    fn rejects_forgeries_and_other_secrets() {
        let text = sample().encode(b"secret");
        assert!(Cursor::decode(&text, b"other").is_err());
        let mut forged = sample();
        forged.tenant = "globex".into();
        let payload = serde_json::to_vec(&forged).unwrap();
        let mut bytes = payload;
        bytes.extend_from_slice(&[0; MAC_BYTES]);
        assert!(Cursor::decode(&URL_SAFE_NO_PAD.encode(bytes), b"secret").is_err());
        for garbage in ["", "!!!", "AAAA"] {
            assert!(Cursor::decode(garbage, b"secret").is_err());
        }
    }
}
