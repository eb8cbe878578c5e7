//! Reading request bodies: a deadline for the whole body, a size limit, and a JSON extractor whose rejections
//! use the API's error format.

use crate::error::ApiError;
use crate::AppState;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;
use std::time::Duration;

/// Reads a whole request body of at most `max_bytes` within `deadline` (start to end, so a body trickled a
/// byte at a time cannot hold a connection and a task for long): 408 when late, 413 when too large.
pub async fn read_body(
    body: Body,
    max_bytes: usize,
    deadline: Duration,
) -> Result<Bytes, ApiError> {
    match tokio::time::timeout(deadline, axum::body::to_bytes(body, max_bytes)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request body was not received within {} s; send it faster or in smaller requests",
                deadline.as_secs_f64()
            ),
        )),
        Ok(Err(error)) => {
            let too_large = std::iter::successors(Some(&error as &dyn std::error::Error), |e| e.source())
                .any(|e| e.is::<http_body_util::LengthLimitError>());
            if too_large {
                Err(ApiError::payload_too_large(format!(
                    "the request body exceeds {max_bytes} bytes; split it into smaller requests"
                )))
            } else {
                Err(ApiError::bad_request(
                    "invalid_request",
                    format!("the request body could not be read: {error}"),
                ))
            }
        }
    }
}

/// The media type of a request's `Content-Type`, lower-case and without parameters (`""` when absent).
pub fn media_type(headers: &axum::http::HeaderMap) -> String {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// A JSON request body (content type `application/json`), read with the server's size limit and deadline.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let essence = media_type(request.headers());
        if essence != "application/json" {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("expected a JSON body with content type application/json, got `{essence}`"),
            ));
        }
        let bytes = read_body(
            request.into_body(),
            state.config.max_body_bytes,
            state.config.body_timeout,
        )
        .await?;
        serde_json::from_slice(&bytes)
            .map(ApiJson)
            .map_err(|error| {
                ApiError::bad_request("invalid_request", format!("invalid JSON body: {error}"))
            })
    }
}
