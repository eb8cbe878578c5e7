//! The one table that maps every error to an HTTP status and a stable snake_case code.
//!
//! Client mistakes explain what was expected; internal failures give the client a generic message and are
//! logged in full. Responses have the shape `{"error": {"code", "message", "details"?}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use logbook_store::StoreError;
use serde_json::{json, Value};

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> ApiError {
        self.details = Some(details);
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn payload_too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    pub fn method_not_allowed() -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "events are immutable: they cannot be updated or deleted, and this route does not accept that method",
        )
    }

    pub fn internal() -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "an internal error occurred; it has been logged",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": {"code": self.code, "message": self.message}});
        if let Some(details) = self.details {
            body["error"]["details"] = details;
        }
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<logbook_core::Error> for ApiError {
    fn from(error: logbook_core::Error) -> ApiError {
        match error {
            logbook_core::Error::InvalidEvent { message, field } => {
                let error = ApiError::bad_request("invalid_event", message);
                match field {
                    Some(field) => error.with_details(json!({"field": field})),
                    None => error,
                }
            }
            logbook_core::Error::InvalidFilter { message, details } => {
                let error = ApiError::bad_request("invalid_filter", message);
                match details {
                    Some(details) => error.with_details(details),
                    None => error,
                }
            }
            logbook_core::Error::InvalidCursor(message) => {
                ApiError::bad_request("invalid_cursor", message)
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        match error {
            StoreError::NotFound(message) => ApiError::not_found(message),
            StoreError::Conflict(message) => ApiError::new(StatusCode::CONFLICT, "conflict", message),
            StoreError::NoSpace => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "insufficient_storage",
                "the server's disk is full; nothing of this request was stored. Retry once space is freed",
            ),
            StoreError::Poisoned(reason) => {
                tracing::error!(reason, "rejecting a write: the write-ahead log is poisoned");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the event log cannot accept writes after a storage failure; nothing of this request was stored",
                )
            }
            StoreError::ShuttingDown => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the server is shutting down; retry shortly")
            }
            other => {
                tracing::error!(error = %other, "internal storage error");
                ApiError::internal()
            }
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
