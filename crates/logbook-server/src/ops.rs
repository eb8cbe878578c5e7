//! Operations endpoints: health, Prometheus metrics, and the fallbacks.

use crate::error::ApiError;
use crate::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// `GET /healthz`: 200 once the store is open and serving; 503 once it cannot accept writes (a failed fsync),
/// until Logbook is restarted.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(), responses(
    (status = 200, description = "Serving"),
    (status = 503, description = "Reads work, writes are refused after a storage failure; restart to recover")))]
pub async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    let stats = state.store.health();
    match stats.write_failure {
        None => (
            StatusCode::OK,
            Json(json!({"status": "ok", "events": stats.events, "tenants": stats.tenants})),
        ),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                json!({"status": "read_only", "reason": reason, "events": stats.events, "tenants": stats.tenants}),
            ),
        ),
    }
}

/// `GET /v1/entity-types`: the configured entity catalog and the known actions.
#[utoipa::path(get, path = "/v1/entity-types", tag = "events",
    responses((status = 200, body = crate::openapi::EntityTypesBody), (status = 401, body = crate::openapi::ErrorBody)))]
pub async fn entity_types(
    State(state): State<AppState>,
    _caller: crate::auth::Scoped<crate::auth::Read>,
) -> Json<serde_json::Value> {
    let catalog = &state.config.catalog;
    Json(json!({
        "items": catalog.entity_types,
        "actions": catalog.actions,
        "event_types": catalog.event_types_examples,
        "resource_keys": catalog.resource_keys,
    }))
}

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "operations", security(), responses((status = 200, description = "Prometheus text", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let store = state.store.clone();
    let stats = tokio::task::spawn_blocking(move || store.stats())
        .await
        .unwrap_or_default();
    metrics::gauge!("logbook_events").set(stats.events as f64);
    metrics::gauge!("logbook_tenants").set(stats.tenants as f64);
    metrics::gauge!("logbook_wal_bytes").set(stats.wal_bytes as f64);
    metrics::gauge!("logbook_block_bytes").set(stats.block_bytes as f64);
    // The index is updated before each acknowledgement, so no acknowledged event is ever unindexed.
    metrics::gauge!("logbook_index_lag_events").set(0.0);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// The dashboard: one self-contained page (HTML, CSS and JavaScript, no build step), compiled into the binary.
const DASHBOARD_HTML: &str = include_str!("../assets/dashboard.html");

/// `GET /`: the dashboard.
pub async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            // The page only talks to this server; the token never leaves it.
            (header::CONTENT_SECURITY_POLICY, "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'self'"),
        ],
        DASHBOARD_HTML,
    )
        .into_response()
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route; see /openapi.json for the API")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept that method",
    )
}
