//! The opaque pagination cursor of `GET /v1/events`.
//!
//! A cursor is the position of the last event of a page — `(created_at, seq)` in the listing's order — plus
//! what makes the next page well defined: the tenant, the order, the `now` that resolved relative times on the
//! first page, and a fingerprint of the defining query parameters. It is encoded as base64url of
//! `JSON payload ‖ MAC`, where MAC is the first 16 bytes of SHA-256(secret ‖ payload) with a per-deployment
//! secret ([`crate::signed`]); a forged or altered cursor is rejected as `invalid_cursor`.
//!
//! Pages continue strictly after the position, so an event is never repeated; events are never removed and
//! the order is total, so none is skipped. Events that arrive during paging appear only if they sort after the
//! position.

use crate::error::{Error, Result};
use crate::filter::query_string::Order;
use crate::time::Millis;
use serde::{Deserialize, Serialize};

/// [`Cursor::tenant`] of a listing across all tenants; never a tenant id (those cannot contain `*`).
pub const ALL_TENANTS: &str = "*";

/// A decoded cursor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The listing's tenant, or [`ALL_TENANTS`] for the deployment admin's listing across tenants.
    #[serde(rename = "t")]
    pub tenant: String,
    /// In a listing across tenants, the tenant of the last event (the order is `(created_at, tenant, seq)`).
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub at_tenant: Option<String>,
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
        crate::signed::seal(
            secret,
            &serde_json::to_vec(self).expect("a cursor always serializes"),
        )
    }

    pub fn decode(text: &str, secret: &[u8]) -> Result<Cursor> {
        let invalid = || {
            Error::InvalidCursor(
                "the cursor is malformed or was altered; pass the `next_cursor` of the previous page unchanged"
                    .into(),
            )
        };
        let payload = crate::signed::open(secret, text).ok_or_else(invalid)?;
        serde_json::from_slice(&payload).map_err(|_| invalid())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Cursor {
        Cursor {
            tenant: "acme".into(),
            at_tenant: None,
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
        assert!(Cursor::decode(&forged.encode(b"guessed secret"), b"secret").is_err());
        for garbage in ["", "!!!", "AAAA"] {
            assert!(Cursor::decode(garbage, b"secret").is_err());
        }
    }
}
