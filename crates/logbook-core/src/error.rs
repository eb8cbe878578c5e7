//! Errors of the domain layer. Every variant is a client mistake: the server maps each to a 4xx.

use serde_json::Value;

/// A rejection of client input, with what was expected.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum Error {
    /// An event failed validation. `field` is the JSON path of the offending field when known.
    #[error("{message}")]
    InvalidEvent {
        message: String,
        field: Option<String>,
    },
    /// A filter, time or query parameter could not be understood.
    #[error("{message}")]
    InvalidFilter {
        message: String,
        details: Option<Value>,
    },
    /// A pagination cursor was malformed, forged, or used with different query parameters.
    #[error("{0}")]
    InvalidCursor(String),
}

impl Error {
    pub fn invalid_event(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidEvent {
            message: message.into(),
            field: Some(field.into()),
        }
    }

    pub fn invalid_filter(message: impl Into<String>) -> Self {
        Error::InvalidFilter {
            message: message.into(),
            details: None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
